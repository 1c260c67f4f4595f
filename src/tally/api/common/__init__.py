"""What every resource of the API shares, one module each: the envelope and
the error statuses, body decoding, query parameters, paging, the admin-rights
check, common response shapes, and the route table's entries."""
