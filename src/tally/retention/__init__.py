"""Bounded growth: what tally prunes and when (``policy``, pure) and the
loop that prunes it in small chunks beside the worker and delivery loops
(``loop``); the SQL is ``tally.storage.sql.retention``."""
