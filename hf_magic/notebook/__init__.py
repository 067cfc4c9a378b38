"""The notebook side: ``ChatSession`` (the one core), and its views, the ``%%hfchat`` magics and the
``ChatPanel``, with the rendering and progress views they share. Nothing here generates a token."""
