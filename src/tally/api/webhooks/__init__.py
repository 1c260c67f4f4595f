"""The webhooks API (the SDK's ``client.webhooks.*``): ``/webhooks`` and the
delivery log ``/webhook-events`` (``routes``), the requests they read
(``requests``) and the shapes they answer with (``shapes``)."""
