"""The events API: ``/events``, ``/event-batch``, ``/batch``, ``/event-types``
(``routes``), the requests they read (``requests``) and the shapes they
answer with (``shapes``)."""
