"""The Training page: deploy a configuration, progress, stored errors."""

from __future__ import annotations

from tests.ui.pages import (
    button,
    seed_training,
    table,
)


def test_training_deploys_a_configuration_and_shows_its_waiting_results(client, open_page):
    from tests.conftest import add_model_unvalidated

    torch_id = add_model_unvalidated(client, "torch-digits", "pytorch")
    keras_id = add_model_unvalidated(client, "keras-digits", "tensorflow")
    client.create_configuration("pair", [torch_id, keras_id])
    at = open_page("training")
    assert at.info[0].value == "No deployments yet: deploy a configuration above."
    at.number_input(key="train_batch").set_value(16)
    at.text_input(key="train_kwargs_pytorch").input("epochs=five")
    button(at, "Deploy").click().run()
    assert at.error[0].value.startswith("training argument epochs: five is not a literal")
    assert client.list_deployments() == []

    at.text_input(key="train_kwargs_pytorch").input("epochs=3, lr=0.01")
    at.text_input(key="train_val_tensorflow").input("batch_size=256")
    at.checkbox(key="train_matrix").uncheck()
    at.toggle(key="train_follow")  # exists; left off
    button(at, "Deploy").click().run()
    assert not at.exception and not at.error
    [dep] = client.list_deployments()
    assert at.success[0].value == (
        f"Deployed 'pair' as deployment {dep.id}: 2 model(s) wait for a control message "
        f"with deployment_id {dep.id}."
    )
    assert (dep.batch_size, dep.confusion_matrix) == (16, False)
    assert dep.kwargs["pytorch"]["train"] == {"epochs": 3, "lr": 0.01}
    assert dep.kwargs["tensorflow"]["val"] == {"batch_size": 256}
    [row] = table(at, "configuration")
    assert (row["deployment"], row["state"], row["batch size"]) == (dep.id, "2 waiting", 16)
    assert "pytorch: epochs=3, lr=0.01" in row["training arguments"]
    results = table(at, "epoch")
    assert [(r["model"], r["status"]) for r in results] == [
        ("torch-digits", "waiting"),
        ("keras-digits", "waiting"),
    ]
    assert f"deployment_id {dep.id}" in at.info[0].value
    assert dep.online is None

    at.checkbox(key="train_online").check()  # online options, as `train deploy --online`
    at.number_input(key="on_n").set_value(200)
    at.text_input(key="on_metric").input("accuracy")
    at.selectbox(key="on_change").select("up")
    button(at, "Deploy").click().run()
    assert not at.exception and not at.error
    online = client.list_deployments()[-1].online
    assert (online["window_messages"], online["monitoring_metric"], online["change"]) == (
        200,
        "accuracy",
        "up",
    )
    assert online["stream_timeout_s"] == 60.0  # the default


def test_training_shows_progress_and_the_stored_error(client, open_page):
    from kafkaml_ray.store import ResultStatus, TrainingResult

    ids = seed_training(
        client, (("torch-digits", "pytorch"), ("keras-digits", "tensorflow")), status="waiting"
    )
    with client.store.session() as s:
        training, failed = (s.get_one(TrainingResult, i) for i in ids["results"])
        training.status = ResultStatus.TRAINING
        training.progress = {"epoch": 2, "epochs": 4, "batch": 5, "batches": 10, "metrics": {}}
        failed.status, failed.error = ResultStatus.FAILED, "reading the data stream failed: boom"
    at = open_page("training")
    assert not at.exception
    [bar] = at.get("progress")
    assert bar.proto.value == 37  # (2 - 1 + 5/10) of 4 epochs
    assert bar.proto.text == "torch-digits: epoch 2 of 4, batch 5 of 10"
    assert at.error[0].value == "keras-digits: reading the data stream failed: boom"
    assert "Stop this deployment" in [b.label for b in at.button]
