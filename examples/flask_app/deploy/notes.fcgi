#!/bin/sh
# The FastCGI program apache-fcgid.conf points at. mod_fcgid runs it as Apache's user with a
# listening unix socket on file descriptor 0; fcgi-gateway serves on that socket (it needs no
# --bind) and stops gracefully on the SIGTERM mod_fcgid sends at idle timeout or shutdown.
export FCGI_EXAMPLE_FLASK_DB=/var/lib/fcgi-gateway/flask/notes.sqlite3
exec /srv/fcgi-gateway/.venv/bin/fcgi-gateway \
    --chdir /srv/fcgi-gateway/examples/flask_app \
    --workers 1 \
    --graceful-timeout 10 \
    app:app
