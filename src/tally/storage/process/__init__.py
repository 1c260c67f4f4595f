"""The storage process: storage in a process of its own beside the HTTP
process(es) (``remote``), and the frames between them (``frames``)."""
