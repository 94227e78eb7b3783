"""The peer libraries themselves on the LDS settings: dattri (LoGra, TRAK) and kronfluence (EK-FAC).

    bash benchmarks/lds/setup_peers.sh                       # the separate venv, .venv-peers/
    .venv-peers/bin/python -m benchmarks.lds.peers digits \
        --json benchmarks/lds/results/digits_peers.json
    .venv-peers/bin/python -m benchmarks.lds.peers shakespeare \
        --json benchmarks/lds/results/shakespeare_peers.json

Same trained model, same data, same queries and the same committed ground truth as
`digits.py` / `shakespeare.py`; each library runs through its public API with its documented
defaults, plus (dattri LoGra) the damping rule our LoGRA-dense uses, λ = 0.1·tr/D, which is
exactly what dattri's ``damping=0.1`` means. Sign convention (all three): a larger score means
up-weighting the training example lowers the query's loss, as for our methods.

Storage is counted as for our rows (2 bytes per stored number). kronfluence stores no
per-example vectors: it recomputes every training gradient for each batch of queries, so its
rows have no bytes-per-example (``None``) and report the scoring time instead.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .harness import Report, read_ground_truth


class _Items(Dataset):
    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


# ---------------------------------------------------------------- dattri


def dattri_logra(
    model: nn.Module,
    layers: list[str],
    loss_of_batch,
    train: DataLoader,
    query: DataLoader,
    proj_dim: int,
    damping: float | None,
) -> tuple[np.ndarray, int]:
    """dattri's LoGraAttributor (factorised Gaussian projection, eFIM, exact per-layer inverse).

    Returns scores (Q, N) and the number of stored values per training example.
    """
    from dattri.algorithm.logra import LoGraAttributor
    from dattri.task import AttributionTask

    task = AttributionTask(
        loss_func=lambda m, batch, device: loss_of_batch(m, batch),
        model=model,
        checkpoints=model.state_dict(),
    )
    with tempfile.TemporaryDirectory() as tmp:
        attributor = LoGraAttributor(
            task=task,
            layer_names=layers,
            hessian="eFIM",
            damping=damping,
            device="cpu",
            proj_dim=proj_dim,
            offload="cpu",
            cache_dir=tmp,
        )
        attributor.cache(train)
        scores = attributor.attribute(train, query)  # (N, Q)
        numbers = int(attributor.total_proj_dim)
    return scores.T.double().numpy(), numbers


def dattri_trak(
    model: nn.Module,
    margin,
    correct_probability,
    train: DataLoader,
    query: DataLoader,
    proj_dim: int,
    regularization: float,
) -> np.ndarray:
    """dattri's TRAKAttributor, one checkpoint: scores (Q, N)."""
    from dattri.algorithm.trak import TRAKAttributor
    from dattri.task import AttributionTask

    task = AttributionTask(loss_func=margin, model=model, checkpoints=model.state_dict())
    attributor = TRAKAttributor(
        task=task,
        correct_probability_func=correct_probability,
        device="cpu",
        regularization=regularization,
        projector_kwargs={"proj_dim": proj_dim, "device": "cpu"},
    )
    with torch.no_grad():
        attributor.cache(train)
        scores = attributor.attribute(query)  # (N, Q)
    return scores.T.double().numpy()


# ----------------------------------------------------------- kronfluence


def kronfluence_scores(
    model: nn.Module,
    task,
    train: Dataset,
    query: Dataset,
    collate,
    strategy: str,
    batch: int,
    empirical: bool = False,
    damping: float | None = 1e-8,
) -> np.ndarray:
    """kronfluence's Analyzer: fit factors (``strategy``; true Fisher with labels drawn from
    the model, or the empirical Fisher), pairwise scores (Q, N). ``damping`` is kronfluence's
    ``damping_factor`` (its default 1e-8; None = its heuristic, 0.1 x the mean eigenvalue)."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.utils.dataset import DataLoaderKwargs

    logging.getLogger("kronfluence").setLevel(logging.WARNING)
    model = prepare_model(copy.deepcopy(model), task)  # it wraps modules in place
    with tempfile.TemporaryDirectory() as tmp:
        analyzer = Analyzer(
            analysis_name="lds",
            model=model,
            task=task,
            output_dir=tmp,
            disable_tqdm=True,
            disable_model_save=True,
            cpu=True,
        )
        analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=collate, num_workers=0))
        analyzer.fit_all_factors(
            factors_name=strategy,
            dataset=train,
            per_device_batch_size=batch,
            factor_args=FactorArguments(strategy=strategy, use_empirical_fisher=empirical),
            overwrite_output_dir=True,
        )
        analyzer.compute_pairwise_scores(
            scores_name=strategy,
            factors_name=strategy,
            query_dataset=query,
            train_dataset=train,
            per_device_query_batch_size=len(query),
            per_device_train_batch_size=batch,
            score_args=ScoreArguments(damping_factor=damping),
            overwrite_output_dir=True,
        )
        scores = analyzer.load_pairwise_scores(strategy)["all_modules"]
    return scores.double().numpy()


# (strategy, empirical Fisher, damping_factor): kronfluence's defaults for both strategies; the
# last two rows were added after the first run, to see whether the Fisher type or the damping
# explains EK-FAC's lead on setting B.
KRONFLUENCE_RUNS = [
    ("ekfac", False, 1e-8),
    ("kfac", False, 1e-8),
    ("ekfac", True, 1e-8),
    ("ekfac", False, None),
]


def _kronfluence_label(strategy: str, empirical: bool, damping: float | None) -> str:
    label = {"ekfac": "EK-FAC", "kfac": "KFAC"}[strategy]
    if empirical:
        label += ", empirical Fisher"
    if damping is None:
        label += ", damping 0.1 x mean eig"
    return label


def add_kronfluence(report: Report, runs, model, task, train, query, collate, batch: int) -> None:
    """One row per kronfluence run (strategy, empirical Fisher, damping) of ``runs``."""
    for run in runs:
        scores, secs = _timed(
            kronfluence_scores, model, task, train, query, collate, run[0], batch, *run[1:]
        )
        report.add("kronfluence", _kronfluence_label(*run), scores, None, secs)


def _timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


# --------------------------------------------------------------- setting A


def run_digits(gt: Path) -> list[dict]:
    from kronfluence.task import Task

    from . import digits

    subsets, losses, config = read_ground_truth(gt)
    x, y, xq, yq = digits.load()
    model = digits.train(x, y, seed=0).eval()  # requires_grad stays on: dattri's hooks need it
    report = Report(subsets, losses)
    pairs = lambda xs, ys: _Items([(xs[i], ys[i]) for i in range(len(ys))])  # noqa: E731
    train_loader = DataLoader(pairs(x, y), batch_size=250, shuffle=False)
    query_loader = DataLoader(pairs(xq, yq), batch_size=len(yq), shuffle=False)

    # dattri 0.3.0 indexes a tuple batch's inputs twice while setting up its projections
    # (`sample_batch[0]`, then `sample_inputs[0]`), which drops the batch axis of a 2-D input.
    # Workaround: batches carry a leading singleton axis that the wrapper removes again.
    class Unbatch(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, xb: torch.Tensor) -> torch.Tensor:
            return self.inner(xb[0] if xb.dim() == 3 else xb)

    def lifted(items):
        xb, yb = torch.utils.data.default_collate(items)
        return xb[None], yb

    wrapped = Unbatch(model)
    lifted_train = DataLoader(pairs(x, y), batch_size=250, shuffle=False, collate_fn=lifted)
    lifted_query = DataLoader(pairs(xq, yq), batch_size=len(yq), shuffle=False, collate_fn=lifted)
    layers = ["inner.0", "inner.2"]  # the two nn.Linear layers, as our methods track

    def loss_of_batch(m, batch):
        xb, yb = batch
        return nn.functional.cross_entropy(m(xb), yb, reduction="sum")

    for proj_dim, damping, label in [
        (4096, None, "default damping (1e-5 tr/D)"),
        (4096, 0.1, "λ = 0.1·tr/D"),
        (1024, 0.1, "λ = 0.1·tr/D"),
    ]:
        (scores, numbers), secs = _timed(
            dattri_logra,
            wrapped,
            layers,
            loss_of_batch,
            lifted_train,
            lifted_query,
            proj_dim,
            damping,
        )
        report.add("dattri LoGra", f"proj {proj_dim}, {label}", scores, 2 * numbers, secs)

    def margin(params, pair):  # dattri's TRAK target for classification: the logit margin
        xi, yi = pair
        logp = -nn.functional.cross_entropy(
            torch.func.functional_call(model, params, xi.unsqueeze(0)), yi.unsqueeze(0)
        )
        return logp - torch.log(1 - torch.exp(logp))

    def correct_probability(params, pair):
        xi, yi = pair
        return torch.exp(
            -nn.functional.cross_entropy(
                torch.func.functional_call(model, params, xi.unsqueeze(0)), yi.unsqueeze(0)
            )
        )

    for proj_dim, reg in [(512, 0.0), (2048, 1e-3)]:
        scores, secs = _timed(
            dattri_trak,
            model,
            margin,
            correct_probability,
            train_loader,
            query_loader,
            proj_dim,
            reg,
        )
        report.add("dattri TRAK", f"proj {proj_dim}, reg {reg:g}", scores, 2 * proj_dim, secs)

    class DigitsTask(Task):
        def compute_train_loss(self, batch, model, sample=False):
            xb, yb = batch
            logits = model(xb)
            if sample:  # true Fisher: labels drawn from the model
                with torch.no_grad():
                    yb = torch.multinomial(torch.softmax(logits.detach(), -1), 1).flatten()
            return nn.functional.cross_entropy(logits, yb, reduction="sum")

        def compute_measurement(self, batch, model):
            xb, yb = batch
            return nn.functional.cross_entropy(model(xb), yb, reduction="sum")

    add_kronfluence(
        report, KRONFLUENCE_RUNS, model, DigitsTask(), pairs(x, y), pairs(xq, yq), None, 250
    )
    print(f"ground truth: {config['m']} subsets x {config['seeds']} seeds, {len(yq)} queries")
    return report.rows


# --------------------------------------------------------------- setting B


def _lm_setting(setting, gt: Path):
    """A language-model setting's Report over ``gt``, its config, task, trained model (not
    frozen: the peers take gradients), tracked layer names and train/query examples."""
    from indexer.data import Example
    from indexer.engine.capture import select_layers

    subsets, losses, config = read_ground_truth(gt)
    train_texts, query_texts = setting.load()
    lm_task = setting.task(train_texts)
    model = setting.train(lm_task, train_texts, seed=0)
    layers = [name for name, _ in select_layers(model, [])]  # the layers our methods track
    train_ex = [Example(completion=t) for t in train_texts]
    query_ex = [Example(completion=t) for t in query_texts]
    return Report(subsets, losses), config, lm_task, model, layers, train_ex, query_ex


def run_shakespeare(gt: Path) -> list[dict]:
    from types import SimpleNamespace

    from .shakespeare import SETTING

    report, config, lm_task, model, layers, train_ex, query_ex = _lm_setting(SETTING, gt)

    class LossModel(nn.Module):
        """dattri takes a dict batch's loss from ``model(**batch).loss``: the summed token loss."""

        def __init__(self, lm: nn.Module) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask, loss_mask):
            batch = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "loss_mask": loss_mask,
            }
            return SimpleNamespace(loss=lm_task.loss(self.lm, batch).sum())

    wrapped = LossModel(model)
    train_loader = DataLoader(_Items(train_ex), batch_size=32, collate_fn=lm_task.collate)
    query_loader = DataLoader(
        _Items(query_ex), batch_size=len(query_ex), collate_fn=lm_task.collate
    )
    for proj_dim, damping, label in [
        (256, None, "default damping (1e-5 tr/D)"),
        (256, 0.1, "λ = 0.1·tr/D"),
        (1024, 0.1, "λ = 0.1·tr/D"),
    ]:
        (scores, numbers), secs = _timed(
            dattri_logra,
            wrapped,
            [f"lm.{n}" for n in layers],
            lambda m, batch: m(**batch).loss,
            train_loader,
            query_loader,
            proj_dim,
            damping,
        )
        report.add("dattri LoGra", f"proj {proj_dim}, {label}", scores, 2 * numbers, secs)

    def padded(exs):
        batch = lm_task.collate(exs)
        return _Items(
            list(
                zip(*(batch[k] for k in ("input_ids", "attention_mask", "loss_mask")), strict=True)
            )
        )

    def sequence_loss(params, item):
        # No attention mask: padding is on the right and attention is causal, so the counted
        # positions never see it (and HF's mask construction does not trace under vmap).
        ids, attention, mask = (t.unsqueeze(0) for t in item)
        logits = torch.func.functional_call(model, params, (ids,)).logits
        ce = nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none")
        return (ce * (mask[0, 1:] & attention[0, 1:].bool())).sum()

    def margin(params, item):  # log p / (1 - p) of the whole sequence, p = exp(-loss)
        logp = -sequence_loss(params, item)
        return logp - torch.log1p(-torch.exp(logp))

    def correct_probability(params, item):
        return torch.exp(-sequence_loss(params, item))

    for proj_dim, reg in [(1024, 1e-3), (4096, 1e-3)]:
        try:
            scores, secs = _timed(
                dattri_trak,
                model,
                margin,
                correct_probability,
                DataLoader(padded(train_ex), batch_size=32),
                DataLoader(padded(query_ex), batch_size=50),
                proj_dim,
                reg,
            )
        except Exception as err:  # noqa: BLE001 - reported as a row, not hidden
            print(
                f"  dattri TRAK proj {proj_dim}: did not run: {type(err).__name__}: "
                f"{str(err).splitlines()[0][:200]}"
            )
            report.failures.append(
                {
                    "method": "dattri TRAK",
                    "config": f"proj {proj_dim}",
                    "error": f"{type(err).__name__}: {str(err)[:300]}",
                }
            )
            continue
        report.add("dattri TRAK", f"proj {proj_dim}, reg {reg:g}", scores, 2 * proj_dim, secs)

    add_lm_kronfluence(report, KRONFLUENCE_RUNS, model, lm_task, layers, train_ex, query_ex)
    print(f"ground truth: {config['m']} subsets x {config['seeds']} seeds, {len(query_ex)} queries")
    return report.rows + report.failures


def add_lm_kronfluence(report: Report, runs, model, lm_task, layers, train_ex, query_ex) -> None:
    """``add_kronfluence`` for a language-model setting (B, C): its task over ``layers``, the
    examples in batches of 32."""
    task = lm_kronfluence_task(lm_task, layers)
    train, query = _Items(train_ex), _Items(query_ex)
    add_kronfluence(report, runs, model, task, train, query, lm_task.collate, 32)


def lm_kronfluence_task(lm_task, layers: list[str]):
    """kronfluence's Task for a causal LM: summed next-token loss over the counted tokens (true
    Fisher: next tokens drawn from the model), the query's summed loss as the measurement."""
    from kronfluence.task import Task

    class LMTask(Task):
        def compute_train_loss(self, batch, model, sample=False):
            logits = (
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                .logits[:, :-1]
                .float()
            )
            targets = batch["input_ids"][:, 1:]
            if sample:  # true Fisher: next tokens drawn from the model
                with torch.no_grad():
                    probs = torch.softmax(logits.detach(), -1)
                    targets = torch.multinomial(probs.flatten(0, 1), 1).view(targets.shape)
            counted = batch["loss_mask"][:, 1:] & batch["attention_mask"][:, 1:].bool()
            ce = nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            return (ce * counted).sum()

        def compute_measurement(self, batch, model):
            return lm_task.loss(model, batch).sum()

        def get_influence_tracked_modules(self):
            return layers

        def get_attention_mask(self, batch):
            return batch["attention_mask"]

    return LMTask()


def linear_lm(model: nn.Module) -> nn.Module:
    """GPT-2's ``Conv1D`` layers replaced in place by the same maps as ``nn.Linear`` (kronfluence
    tracks Linear and Conv2d modules only); the model's outputs do not change."""
    from transformers.pytorch_utils import Conv1D

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Conv1D):
                linear = nn.Linear(*child.weight.shape)
                linear.weight.data = child.weight.data.T.contiguous()
                linear.bias.data = child.bias.data.clone()
                setattr(module, name, linear)
    return model


def run_milton(gt: Path) -> list[dict]:
    """Setting C: kronfluence's EK-FAC and KFAC (its defaults) on the GPT-2 made linear."""
    from .milton import SETTING

    report, config, lm_task, model, layers, train_ex, query_ex = _lm_setting(SETTING, gt)
    model = linear_lm(model)
    add_lm_kronfluence(report, KRONFLUENCE_RUNS[:2], model, lm_task, layers, train_ex, query_ex)
    print(f"ground truth: {config['m']} subsets x {config['seeds']} seeds, {len(query_ex)} queries")
    return report.rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("setting", choices=["digits", "shakespeare", "milton"])
    ap.add_argument("--ground-truth", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.setting == "digits":
        from . import digits

        rows = run_digits(args.ground_truth or digits.GROUND_TRUTH)
    elif args.setting == "milton":
        from . import milton

        rows = run_milton(args.ground_truth or milton.GROUND_TRUTH)
    else:
        from . import shakespeare

        rows = run_shakespeare(args.ground_truth or shakespeare.GROUND_TRUTH)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
