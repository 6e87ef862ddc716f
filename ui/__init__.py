"""The Streamlit control panel of kafkaml-ray.

``app.py`` is the entry script (``kafkaml-ray ui`` serves it, see :mod:`ui.launch`); each
page is one script under ``pages/``; ``common.py`` holds what pages share (the session's
:class:`~kafkaml_ray.Client`, messages, errors). Pages act only through the Client.
"""
