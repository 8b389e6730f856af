"""One module per `deftrec` command; each body is thin and calls the library."""
