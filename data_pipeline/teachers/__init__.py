"""Acoustic teachers, one module each (``kmeans``, ``encodec``) on ``base``; ``factory`` builds
and loads them."""
