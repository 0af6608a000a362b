"""Load generators: client processes that keep calls in flight against a server and report what came back."""
