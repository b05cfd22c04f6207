"""Drive-by and walk-by collection: a route list, a GPS receiver, live progress and a report."""
