"""What a running tally tells its operators: Prometheus metrics
(``metrics``: every name and its meaning in one place; ``exposition``: the
text a scrape gets and who may get it) and structured logs (``logs``; the
request id and access log of ``requests``). The parts above record into them;
nothing here reaches back into those parts."""
