"""The features API: ``/features``, ``/company-overrides``, ``/feature-usage``,
``/usage-by-company`` (``routes``), the requests they read (``requests``) and
the shapes they answer with (``shapes``)."""
