"""The Streamlit control panel of kafkaml-ray.

``app.py`` is the entry script (``kafkaml-ray ui`` serves it, see
:mod:`kafkaml_ray.panel`); each page is one script under ``views/``; ``common.py`` holds
what pages share (the session's :class:`~kafkaml_ray.Client`, messages, errors) and
``charts.py`` the Altair charts. Pages act only through the Client.

The page scripts must not live in a directory named ``pages/`` beside ``app.py``: Streamlit
then serves them as a v1 multipage app until some session has run ``app.py``, and a fresh
server would run ``/models`` without ``app.py`` and its password gate.
"""
