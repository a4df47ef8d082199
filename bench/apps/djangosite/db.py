"""Creates the table and its rows on first use (no migrations folder: one model is enough)."""

from benchdata import creation_lock, posts
from django.db import connection

from .models import Post


def ensure_db() -> None:
    with creation_lock("django"):
        if Post._meta.db_table not in connection.introspection.table_names():
            with connection.schema_editor() as editor:
                editor.create_model(Post)
        if not Post.objects.exists():
            Post.objects.bulk_create(Post(title=title, body=body) for title, body in posts())
    connection.close()
