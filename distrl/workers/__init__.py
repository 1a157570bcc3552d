"""Ray actors, one file per role, and the actor-group abstraction that places them."""
