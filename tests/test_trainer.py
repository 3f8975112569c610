"""The trainer's stage specs: sampler, frozen parts, clipping, optimizers, schedules,
parameter groups and augmentation, each against what it must do."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from oneclass.data.items import LABELED_ANOMALY, UNLABELED
from oneclass.data.items import PatchData
from oneclass.engine import Stage, Trainer
from oneclass.errors import OneclassError
from oneclass.methods.base import Method
from oneclass.recipe import TrainSection


def trainer(batch_size=8, epochs=1, **kw) -> Trainer:
    return Trainer(TrainSection(epochs=epochs, batch_size=batch_size, lr=1e-2, device="cpu", **kw), seed=0)


def holding(trainer: Trainer, **modules: torch.nn.Module) -> Method:
    method = Method(None, (1, 4, 4))
    for name, module in modules.items():
        method.add(name, module)
    method.trainer = trainer
    return method


def data(n_other=20, n_anomalies=3) -> PatchData:
    """Item i's pixels all hold the value i, so a batch tells which items it holds."""
    n = n_other + n_anomalies
    images = np.repeat(np.arange(n, dtype=np.uint8), 16).reshape(n, 1, 4, 4)
    roles = np.r_[np.full(n_other, UNLABELED), np.full(n_anomalies, LABELED_ANOMALY)].astype(np.int8)
    return PatchData(images, np.arange(n), roles=roles)


class Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[np.ndarray] = []

    def loss(self, batch):
        self.seen.append((batch["x"][:, 0, 0, 0] * 255).round().int().numpy())
        return (self.w * batch["x"].mean()).sum() + (self.w ** 2).sum()


def test_balanced_batches_hold_k_anomalies_and_every_other_item_once_an_epoch():
    items, net = data(), Recorder()
    t = trainer(batch_size=8)
    holding(t, net=net)
    t.stage(Stage("fit", list(net.parameters()), 1e-2, epochs=2, sampler="balanced", anomalies_per_batch=3),
            items, net.loss)
    assert len(net.seen) == 2 * math.ceil(20 / 5)  # 20 other items, 5 a batch, two epochs
    for epoch in (net.seen[:4], net.seen[4:]):
        others = np.concatenate([b[b < 20] for b in epoch])
        assert sorted(others.tolist()) == list(range(20))  # each once
        assert all((b >= 20).sum() == 3 for b in epoch)  # three labelled anomalies in every batch


def test_an_epoch_floor_repeats_passes_of_a_small_training_set_in_full_batches():
    # 10 items at batch 4 are 3 batches a pass; a floor of 5 makes each epoch 5 full batches,
    # 20 positions: two whole passes, so every item twice an epoch
    items, net = data(n_other=10, n_anomalies=0), Recorder()
    t = trainer(batch_size=4, min_epoch_steps=5)
    holding(t, net=net)
    records = []
    t.log = records.append
    t.stage(t.spec("fit", net.parameters(), epochs=2), items, net.loss)
    assert len(net.seen) == 2 * 5 and all(len(b) == 4 for b in net.seen)
    for epoch in (net.seen[:5], net.seen[5:]):
        assert sorted(np.concatenate(epoch).tolist()) == sorted(2 * list(range(10)))
    assert [r["epoch"] for r in records if "loss" in r] == [1, 2]


def test_an_epoch_floor_leaves_large_sets_and_step_counted_stages_alone():
    # a pass of 20 items at batch 8 (3 batches) is above a floor of 2: unchanged, each once
    items, net = data(n_other=20, n_anomalies=0), Recorder()
    t = trainer(batch_size=8, min_epoch_steps=2)
    holding(t, net=net)
    t.stage(t.spec("fit", net.parameters(), epochs=1), items, net.loss)
    assert [len(b) for b in net.seen] == [8, 8, 4]
    assert sorted(np.concatenate(net.seen).tolist()) == list(range(20))
    # counted in steps, the stage takes its steps whatever the floor: 4 batches, the
    # epoch still one pass of 3 (the second epoch cut after one batch)
    items, net = data(n_other=20, n_anomalies=0), Recorder()
    t = trainer(batch_size=8, min_epoch_steps=10)
    holding(t, net=net)
    t.stage(t.spec("fit", net.parameters(), steps=4), items, net.loss)
    assert [len(b) for b in net.seen] == [8, 8, 4, 8]


def test_an_epoch_floor_repeats_the_balanced_samplers_other_items():
    # 6 other items, 2 of a batch of 4 (2 labelled anomalies each): 3 batches a pass; a
    # floor of 6 takes every other item twice an epoch, still 2 anomalies in each batch
    items, net = data(n_other=6, n_anomalies=3), Recorder()
    t = trainer(batch_size=4, min_epoch_steps=6)
    holding(t, net=net)
    t.stage(t.spec("fit", net.parameters(), epochs=1, sampler="balanced", anomalies_per_batch=2), items, net.loss)
    assert len(net.seen) == 6
    assert sorted(np.concatenate([b[b < 6] for b in net.seen]).tolist()) == sorted(2 * list(range(6)))
    assert all((b >= 6).sum() == 2 for b in net.seen)


@pytest.mark.parametrize("roles,k,message", [
    (np.zeros(23, np.int8), 3, "stage fit: the balanced sampler needs labelled anomalies in the training set"),
    (None, 8, "stage fit: anomalies_per_batch must lie in 1..7 (the batch size is 8), got 8"),
])
def test_balanced_sampler_refusals(roles, k, message):
    items, net = data(), Recorder()
    if roles is not None:
        items.roles = roles
    t = trainer()
    holding(t, net=net)
    with pytest.raises(OneclassError) as info:
        t.stage(Stage("fit", list(net.parameters()), 1e-2, sampler="balanced", anomalies_per_batch=k), items, net.loss)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_frozen_module_and_frozen_batch_norm():
    trained, frozen, bn_fixed = (torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
                                 for _ in range(3))
    t = trainer()
    holding(t, trained=trained, frozen=frozen, bn_fixed=bn_fixed)
    before = {name: {k: v.clone() for k, v in m.state_dict().items()}
              for name, m in (("frozen", frozen), ("bn_fixed", bn_fixed))}
    params = [*trained.parameters(), *frozen.parameters(), *bn_fixed.parameters()]

    def loss(batch):
        x = batch["x"] * 5 + 1
        return sum(m(x).pow(2).mean() for m in (trained, frozen, bn_fixed))

    t.stage(Stage("fit", params, 1e-1, epochs=2, frozen=("frozen",), frozen_bn=("bn_fixed",)), data(), loss)
    assert all(torch.equal(v, before["frozen"][k]) for k, v in frozen.state_dict().items())
    assert all(p.requires_grad for p in frozen.parameters())  # held only during the stage
    bn = bn_fixed[1]
    assert torch.equal(bn.running_mean, before["bn_fixed"]["1.running_mean"])  # statistics fixed
    assert not torch.equal(bn_fixed[0].weight, before["bn_fixed"]["0.weight"])  # weights trained
    assert not torch.equal(trained[1].running_mean, torch.zeros(2))


def test_gradient_clipping_bounds_each_step():
    net = torch.nn.Linear(1, 1, bias=False)
    t = trainer(batch_size=23)
    holding(t, net=net)
    before = net.weight.detach().clone()

    def loss(batch):
        return 1000.0 * net(batch["x"].mean((1, 2, 3))[:, None]).sum()

    t.stage(Stage("fit", list(net.parameters()), 1.0, optimizer="sgd", momentum=0.0, clip=0.01), data(), loss)
    assert (net.weight.detach() - before).abs().item() == pytest.approx(0.01, rel=1e-4)  # one step, clipped


@pytest.mark.parametrize("schedule,expected", [
    ("step", [1.0, 0.5, 0.25]),  # step_size 1, factor 0.5
    ("multistep", [1.0, 1.0, 0.5]),  # milestone 2
    ("constant", [1.0, 1.0, 1.0]),
    ("cosine", [1.0, 0.5 * (1 + math.cos(math.pi / 3)), 0.5 * (1 + math.cos(2 * math.pi / 3))]),
])
def test_schedules_follow_their_closed_forms(schedule, expected):
    net = torch.nn.Linear(1, 1)
    records = []
    t = trainer(batch_size=23)
    t.log = records.append
    holding(t, net=net)
    spec = Stage("fit", list(net.parameters()), 1.0, epochs=3, schedule=schedule, milestones=(2,),
                 lr_factor=0.5, optimizer="adamw")
    t.stage(spec, data(), lambda batch: net(batch["x"].mean((1, 2, 3))[:, None]).sum())
    after_each = [r["lr"] for r in records]  # the lr after each epoch's scheduler step
    assert [1.0, *after_each[:-1]] == pytest.approx(expected)


def test_parameter_groups_keep_their_own_learning_rates():
    a, b = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    t = trainer()
    holding(t, a=a, b=b)
    spec = Stage("fit", [{"params": list(a.parameters())}, {"params": list(b.parameters()), "lr": 0.0}], 0.1)
    before = b.weight.detach().clone()
    t.stage(spec, data(), lambda batch: (a(batch["x"].mean((1, 2, 3))[:, None]) + b(batch["x"].mean((1, 2, 3))[:, None])).sum())
    assert torch.equal(b.weight, before)  # lr 0 for b's group
    assert spec.make_optimizer().param_groups[0]["lr"] == 0.1


def test_augmentation_reaches_training_batches():
    images = np.zeros((16, 1, 4, 4), np.uint8)
    images[:, 0, :, 0] = 255  # a bright left column
    items = PatchData(images, np.arange(16), roles=np.zeros(16, np.int8))
    seen = []
    net = torch.nn.Linear(1, 1)
    t = trainer(batch_size=16)
    holding(t, net=net)

    def loss(batch):
        seen.append(batch["x"].clone())
        return net(batch["x"].mean((1, 2, 3))[:, None]).sum()

    t.stage(Stage("fit", list(net.parameters()), 1e-3, augment=("hflip",)), items, loss)
    left, right = seen[0][:, 0, :, 0].mean(1), seen[0][:, 0, :, -1].mean(1)
    assert ((left == 1) | (right == 1)).all() and (left == 1).any() and (right == 1).any()  # some flipped
    with pytest.raises(OneclassError, match="stage fit: augment: unknown augmentation 'hflp'"):
        t.stage(Stage("fit", list(net.parameters()), 1e-3, augment=("hflp",)), items, loss)


def test_deterministic_mode_switches_torchs_deterministic_algorithms_off_again():
    """A select grid over train.deterministic fits both points in one process."""
    import torch

    from oneclass.engine import deterministic_mode

    try:
        deterministic_mode(True)
        assert torch.are_deterministic_algorithms_enabled()
        deterministic_mode(False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_resuming_a_checkpoint_whose_schedule_steps_otherwise_is_refused(tmp_path):
    """A DevNet checkpoint of an older version stepped its lr every pass (step_size 1); a
    newer one counting optimizer steps would then divide the lr by 10 every step."""
    def stage(step_size, calls=None):
        net = torch.nn.Linear(1, 1)
        t = Trainer(TrainSection(epochs=2, batch_size=8, lr=1e-2, device="cpu"), seed=0, run_dir=tmp_path,
                    resume=calls is None)
        holding(t, net=net)

        def loss(batch):
            if calls is not None:
                calls.append(1)
                if len(calls) > 3:  # Ctrl-C in the second epoch (three batches an epoch)
                    raise KeyboardInterrupt
            return net(batch["x"].mean((1, 2, 3))[:, None]).sum()
        t.stage(Stage("fit", list(net.parameters()), 1.0, epochs=2, schedule="step", step_size=step_size), data(),
                loss)

    with pytest.raises(KeyboardInterrupt):
        stage(1, calls=[])
    with pytest.raises(OneclassError, match=r"checkpoint.pt: its learning-rate schedule falls every 1, this "
                                            r"version's every 40 \(written by an older oneclass\?\)"):
        stage(40)
    stage(1)  # the same schedule resumes
