"""`agora simulate`: a whole teaching network of real node processes on one machine."""
