"""Models: list, register, edit and delete model code.

Code is validated by ``Client.add_model``/``update_model`` in a Ray worker; it never runs
in this process. A refusal shows the error under the editor, at its line.
"""

from __future__ import annotations

import streamlit as st

from kafkaml_ray import KafkaMLError, ModelCodeError
from kafkaml_ray.schemas import ModelInfo
from kafkaml_ray.ui import common

FRAMEWORK_NAMES = common.FRAMEWORK_NAMES
ADD_DEFAULTS = {"add_name": "", "add_description": "", "add_imports": "", "add_code": ""}
VALIDATING = "Validating the model code in a Ray worker..."


def _table(models: list[ModelInfo]) -> None:
    common.table(
        [
            {
                "id": m.id,
                "name": m.name,
                "framework": FRAMEWORK_NAMES[m.framework],
                "input shape": str(m.input_shape),
                "output shape": str(m.output_shape),
                "parameters": m.param_count,
                "description": m.description,
                "updated": m.updated_at.strftime("%Y-%m-%d %H:%M"),
            }
            for m in models
        ],
        "No models yet: register one below.",
    )


def _editor(key: str, value: str | None = None) -> str:
    """A code editor: a text area and, beside it, the code highlighted with line numbers."""
    left, right = st.columns(2)
    with left:
        code = st.text_area("Model code", value=value, key=key, height=420)
    with right:
        st.caption("Preview")
        st.code(code or "# the model code appears here", language="python", line_numbers=True)
    return code


def _load_example() -> None:
    path = common.EXAMPLES / st.session_state["add_example"]
    st.session_state["add_code"] = path.read_text()
    st.session_state["add_name"] = path.stem
    # (an example's name ends with its library: _pytorch, _keras, _sklearn)
    library = path.stem.rsplit("_", 1)[-1]
    st.session_state["add_framework"] = {"keras": "tensorflow"}.get(library, library)


def _add() -> None:
    st.subheader("Register a model")
    examples = sorted(p.name for p in common.EXAMPLES.glob("*.py"))
    if examples:
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        left.selectbox("Start from an example", examples, key="add_example")
        right.button("Load example", on_click=_load_example, key="add_load")
    name = st.text_input("Name", key="add_name")
    framework = common.choice("Framework", FRAMEWORK_NAMES, "add_framework")
    description = st.text_input("Description", key="add_description")
    imports = st.text_area(
        "Imports (optional, run before the code)",
        key="add_imports",
        height=90,
        help="Kafka-ML's separate imports field; imports may also be in the code.",
    )
    code = _editor("add_code")
    if st.button("Register", type="primary", key="add_submit"):
        try:
            with st.spinner(VALIDATING):
                m = common.client().add_model(name, framework, code, imports, description)
        except ModelCodeError as e:
            common.show_code_error(e, code, imports)
        except KafkaMLError as e:
            st.error(str(e))
        else:
            common.done(
                f"Registered {m.name!r}: input {m.input_shape}, output {m.output_shape}, "
                f"{m.parameters} parameters.",
                ADD_DEFAULTS,
            )


def _edit(models: list[ModelInfo]) -> None:
    st.subheader("Edit or delete a model")
    by_id = {m.id: m for m in models}
    chosen = st.selectbox(
        "Model",
        list(by_id),
        format_func=lambda i: f"{i} · {by_id[i].name} ({FRAMEWORK_NAMES[by_id[i].framework]})",
        key="edit_model",
    )
    m = by_id[chosen]
    st.caption(f"Framework: {FRAMEWORK_NAMES[m.framework]} (fixed once registered)")
    name = st.text_input("Name", value=m.name, key=f"edit_name_{m.id}")
    description = st.text_input("Description", value=m.description, key=f"edit_desc_{m.id}")
    imports = st.text_area("Imports", value=m.imports, key=f"edit_imports_{m.id}", height=90)
    code = _editor(f"edit_code_{m.id}", m.code)
    save, delete = st.columns([1, 6])
    if save.button("Save", type="primary", key="edit_save"):
        changed_code = code != m.code or imports != m.imports
        try:
            with st.spinner(VALIDATING if changed_code else "Saving..."):
                saved = common.client().update_model(
                    m.id,
                    name=name if name != m.name else None,
                    description=description,
                    code=code if changed_code else None,
                    imports=imports if changed_code else None,
                )
        except ModelCodeError as e:
            common.show_code_error(e, code, imports)
        except KafkaMLError as e:
            st.error(str(e))
        else:
            common.done(f"Saved {saved.name!r}.")
    if delete.button("Delete", key="edit_delete"):
        try:
            common.client().delete_model(m.id)
        except KafkaMLError as e:
            st.error(str(e))
        else:
            common.done(f"Deleted {m.name!r}.", {"edit_model": None})


def render() -> None:
    common.header("Models", "PyTorch and TensorFlow/Keras model code, validated in Ray.")
    models = common.client().list_models()
    _table(models)
    _add()
    if models:
        _edit(models)


render()
