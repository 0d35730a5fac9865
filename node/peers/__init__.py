"""Membership: peer view, cards, the Peer service and the loops that join, gossip and ping."""
