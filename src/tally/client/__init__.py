"""What talks to a tally over HTTP: ``tally import`` and its checkpoint.

It never opens the database: everything it stores goes through the public
API (``POST /event-batch``), so it works against any tally, local or remote.

- ``events``: pure: a line (NDJSON) or a row (CSV with ``--map``) becomes the
  body of one create-event request; idempotency keys derived from the file
- ``source``: reading a file: its identity, gzip, bounded lines, offsets
- ``chunks``: a file as the chunks an import sends and commits
- ``checkpoint``: what the server acknowledged, written atomically
- ``sender``: one batch to ``POST /event-batch``: retries, refusals
- ``progress``: the progress bar, plain progress lines and the summary
- ``importer``: the import of one file and of several, as the CLI runs it
"""
