"""Pages of the control panel: one Streamlit script each, registered in ``ui/app.py``'s
``PAGES``. A page imports what it shares from :mod:`kafkaml_ray.ui.common` and acts only through
``common.client()`` (a :class:`kafkaml_ray.Client`).

To add a page: write ``views/<name>.py`` and add one row to ``PAGES`` in ``ui/app.py``
(never a ``pages/`` directory: see :mod:`kafkaml_ray.ui`).
"""
