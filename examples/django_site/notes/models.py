from django.db import models
from django.utils import timezone


class Note(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True, default="")
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return self.title

    def to_dict(self) -> dict[str, object]:
        """The JSON shape shared with the Flask example's notes."""
        return {"id": self.id, "title": self.title, "body": self.body, "created": self.created.isoformat()}
