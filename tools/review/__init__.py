"""A reviewer's view of a result: the slices it is read on and the corrections made to it."""
