"""Privacy at the edge: the free-text screen, the coarsening of published times, and private state files."""
