"""``python -m tally.storage.process SOCKET_PATH``: run the storage process
(``server``); ``tally serve`` starts it (``client.StorageProcess``)."""

from tally.storage.process.server import main

raise SystemExit(main())
