"""Serving: ``talkinghead serve`` (REST API + web page over a persistent job queue) and
``talkinghead batch``. Needs the ``serve`` extra; see docs/serving.md."""
