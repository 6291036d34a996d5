"""callq's command line and the supervisor that runs the embedded stack (``callq up``).

Nothing here is imported by ``api``, ``tasks`` or ``workers``: this package sits on top and talks to the
components only through their command lines, environment variables and HTTP health endpoints.
"""
