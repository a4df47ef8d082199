from django.shortcuts import render

from .models import Post


def index(request):
    posts = Post.objects.order_by("-id")[:10]
    return render(request, "djangosite/posts.html", {"posts": posts})
