"""The web console served at ``/`` by ``tally serve``: server-rendered pages
(Jinja2) and one small script for live updates, all shipped in this package.
It reads through the storage interface and knows no SQL."""
