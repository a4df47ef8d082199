"""WSGI side of the gateway: the PEP 3333 environ builder, input/error streams, and the
a2wsgi bridge for running WSGI apps on the async worker."""
