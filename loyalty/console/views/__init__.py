"""One module per page group; each registers its routes on the console blueprint."""
