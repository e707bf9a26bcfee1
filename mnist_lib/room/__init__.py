"""The instructor's room: set up, check, watch and tear down a workshop of N attendees on one cluster.

``python -m mnist_lib.room plan|up|check|status|down`` (docs/instructor.md). Each attendee
gets a namespace of their own with a resource budget and a role, and a kubeconfig with a
time-bound token whose context names that namespace: with it, the attendee runs the same
cells as anyone (the course reads the namespace from the kubeconfig).

- :mod:`mnist_lib.room.objects`: the objects, as plain data (what ``room up`` applies);
- :mod:`mnist_lib.room.kubeconfigs`: tokens (TokenRequest) and the attendees' kubeconfigs;
- :mod:`mnist_lib.room.admin`: what each command does on the cluster.
"""
