"""The companies and users API (the SDK's ``client.companies.*``):
``/companies``, ``/users``, ``/company-memberships``, ``/company-traits``,
``/user-traits`` (``routes``), the requests they read (``requests``) and the
shapes they answer with (``shapes``)."""
