"""Configurations: named sets of registered models (frameworks mixed), trained together."""

from __future__ import annotations

import streamlit as st

from kafkaml_ray import KafkaMLError
from kafkaml_ray.schemas import ConfigurationInfo, ModelInfo
from kafkaml_ray.ui import common

CREATE_DEFAULTS = {"config_name": "", "config_description": "", "config_models": []}


def _table(configs: list[ConfigurationInfo]) -> None:
    common.table(
        [
            {
                "id": c.id,
                "name": c.name,
                "models": ", ".join(c.model_names),
                "description": c.description,
                "created": c.created_at.strftime("%Y-%m-%d %H:%M"),
            }
            for c in configs
        ],
        "No configurations yet: create one below.",
    )


def _create(models: list[ModelInfo]) -> None:
    st.subheader("Create a configuration")
    if not models:
        st.info("Register a model on the Models page first.")
        return
    by_id = {m.id: m for m in models}
    with st.form("create_configuration"):
        name = st.text_input("Name", key="config_name")
        description = st.text_input("Description", key="config_description")
        chosen = st.multiselect(
            "Models",
            list(by_id),
            format_func=lambda i: f"{by_id[i].name} ({by_id[i].framework})",
            key="config_models",
        )
        submitted = st.form_submit_button("Create", type="primary")
    if submitted:
        try:
            c = common.client().create_configuration(name, chosen, description)
        except KafkaMLError as e:
            st.error(str(e))
        else:
            common.done(f"Created {c.name!r} with {', '.join(c.model_names)}.", CREATE_DEFAULTS)


def _delete(configs: list[ConfigurationInfo]) -> None:
    st.subheader("Delete a configuration")
    by_id = {c.id: c for c in configs}
    chosen = st.selectbox(
        "Configuration",
        list(by_id),
        format_func=lambda i: f"{i} · {by_id[i].name}",
        key="delete_config",
    )
    if st.button("Delete", key="delete_config_submit"):
        try:
            common.client().delete_configuration(chosen)
        except KafkaMLError as e:
            st.error(str(e))
        else:
            common.done(f"Deleted {by_id[chosen].name!r}.", {"delete_config": None})


def render() -> None:
    common.header("Configurations", "Models of any framework, deployed for training together.")
    configs = common.client().list_configurations()
    _table(configs)
    _create(common.client().list_models())
    if configs:
        _delete(configs)


render()
