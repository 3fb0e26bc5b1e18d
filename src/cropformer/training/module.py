"""``CropFormerModule``: the LightningModule that owns network, criterion, fusion and metric.

Hyper-parameters are stored as plain config dicts (``_target_`` nodes), never as modules, so
``CropFormerModule.load_from_checkpoint(path)`` rebuilds the model anywhere, without Hydra's
composition, also for checkpoints written by ``torch.compile``d runs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from cropformer.schema import Batch, EntityPrediction, Outputs
from cropformer.utils.errors import UserError
from cropformer.utils.pylogger import RankedLogger

log = RankedLogger(__name__)
# every rank logs the already-gathered metric values; Lightning's hint does not apply
warnings.filterwarnings("ignore", message=".*sync_dist=True.*when logging on epoch level")

NAN_POLICIES = ("raise", "skip")


def _plain(node: Any) -> Any:
    """DictConfig -> plain python containers (resolved), anything else unchanged."""
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def load_init_weights(net: torch.nn.Module, path: str) -> None:
    """Initialise ``net`` from a file when training starts (never when a checkpoint is opened).

    Loaded non-strictly: tensors the file lacks start from scratch (reported in one line),
    mismatched shapes are an error.
    """
    from pathlib import Path

    from cropformer.model.checkpoint_io import network_state, read_weights_file

    if not Path(path).is_file():
        raise UserError(f"model.init_checkpoint={path}: file not found")
    try:
        state, unmapped = network_state(read_weights_file(path))
    except Exception as err:  # not a weights file at all
        raise UserError(f"model.init_checkpoint={path}: cannot read it as weights ({err})") from err
    if unmapped:
        log.warning(f"init_checkpoint: {len(unmapped)} official keys unused, e.g. {unmapped[:3]}")
    own = net.state_dict()
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    head = [k for k in bad if k.startswith("decoder.class_head.")]
    if head and len(head) == len(bad):
        # a class-aware model from entity (or other-class) weights: only the class head differs
        # (official detectron2 loading skips such shape mismatches too); it starts from scratch
        log.info(
            f"init_checkpoint: class head {tuple(state[head[0]].shape)} -> "
            f"{tuple(own[head[0]].shape)} (other classes): it starts from scratch"
        )
        state = {k: v for k, v in state.items() if k not in head}
        bad = []
    if bad:
        raise UserError(
            f"model.init_checkpoint={path}: shapes differ for {len(bad)} tensors (first: {bad[0]} "
            f"{tuple(state[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}); is it the same model?"
        )
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys:
        log.info(
            f"init_checkpoint: {len(result.missing_keys)} tensors start from scratch, e.g. "
            f"{result.missing_keys[:3]}"
        )
    if result.unexpected_keys:
        log.warning(
            f"init_checkpoint: {len(result.unexpected_keys)} unused tensors, e.g. "
            f"{result.unexpected_keys[:3]}"
        )


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss (message names the step and the offending terms)."""


class CropFormerModule(L.LightningModule):
    """CropFormer (or Mask2Former with crops off) as a LightningModule.

    Args:
        net: config of the network (``cropformer.model.cropformer.CropFormer``).
        criterion: config of the set criterion (matcher + losses of both passes).
        fusion: config of the multi-view fusion used at validation/test time.
        optimizer: config of the optimizer factory called with the network (``_target_``
            :func:`cropformer.training.optim.adamw`, ``_partial_: true``).
        scheduler: config of the schedule factory called with the optimizer (``_target_``
            :func:`cropformer.training.optim.poly_schedule`, ``_partial_: true``).
        nan_policy: ``raise`` stops on a non-finite loss naming step and terms; ``skip`` skips the
            optimizer step (all ranks together) and counts it in ``train/skipped_steps``.
        compile: run the network through ``torch.compile`` (weights keep their plain names).
        metric: extra keyword arguments of the entity-AP metric (e.g. ``boundary: true``).
        init_checkpoint: weights to start from (a checkpoint of this platform, a converted
            official state dict, or an official detectron2 ``.pth``/``.pkl`` as published).
            Loaded non-strictly by ``init_weights()`` when a training starts from scratch (a
            Mask2Former checkpoint initialises a CropFormer except for its association module,
            official practice, ref. doc §2.7). Stored as provenance only: opening a checkpoint
            of this module never reads it again (its weights are in the state dict).
        task: ``entity`` (default: AP^e) or a class-aware task (``instance``, ``panoptic``,
            ``semantic``: the fusion is a ``ClassAwareFusion`` and the metrics PQ / AP / mIoU,
            ``ClassAwareEvaluator``); set by the ``task`` config group.
        classes: the class set of a class-aware task as a categories json list (``id``,
            ``name``, ``isthing``); None: taken from the datamodule at setup. Stored in every
            checkpoint, so eval and predict know the class names.
    """

    def __init__(
        self,
        *,
        net: Mapping[str, Any],
        criterion: Mapping[str, Any],
        fusion: Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        nan_policy: str = "raise",
        compile: bool = False,
        metric: Mapping[str, Any] | None = None,
        init_checkpoint: str | None = None,
        task: str = "entity",
        classes: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"model.nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
        self.save_hyperparameters(
            {
                "net": _plain(net),
                "criterion": _plain(criterion),
                "fusion": _plain(fusion),
                "optimizer": _plain(optimizer) or {},
                "scheduler": _plain(scheduler) or {},
                "nan_policy": nan_policy,
                "compile": compile,
                "metric": _plain(metric) or {},
                "init_checkpoint": init_checkpoint,
                "task": task,
                "classes": _plain(classes),
            }
        )
        if task not in ("entity", "instance", "panoptic", "semantic"):
            raise ValueError(
                f"model.task={task!r} is not one of entity, instance, panoptic, semantic"
            )
        self.task = task
        self.net = instantiate(self.hparams["net"])
        self.criterion = instantiate(self.hparams["criterion"])
        self.fusion = instantiate(self.hparams["fusion"])
        self.nan_policy = nan_policy
        self._forward_impl = self.net
        if compile:
            # Not registered as a submodule: parameter names stay free of ``_orig_mod.``.
            object.__setattr__(self, "_forward_impl", torch.compile(self.net))
        self._metric: Any = None
        self.classes: Any = None  # CategorySet of a class-aware task
        if classes:
            self.set_classes(classes)
        self.skipped_steps = 0
        self.last_val_step = -1

    @classmethod
    def from_loaded(cls, loaded: Any) -> CropFormerModule:
        """The module around a read checkpoint (``cropformer.api.loading.LoadedCheckpoint``)."""
        module = cls(
            net=loaded.net_config,
            criterion=loaded.criterion_config,
            fusion=loaded.fusion_config,
            metric=loaded.metric,
            task=loaded.task,
            classes=loaded.classes,
        )
        loaded.load_into(module.net)
        return module.eval()

    def init_weights(self) -> None:
        """Load ``init_checkpoint`` into the network (a training that starts, not a resume)."""
        path = self.hparams.get("init_checkpoint")
        if path:
            load_init_weights(self.net, str(path))

    # ------------------------------------------------------------------ forward
    def use_network(self, forward: Any) -> None:
        """Run every forward through ``forward`` instead of ``self.net`` (e.g. an exported
        file's runtime, ``export.session.ExportedNetwork``, or a compiled network); it takes
        the network's call contract. Not registered as a submodule: the checkpoint is unchanged."""
        object.__setattr__(self, "_forward_impl", forward)

    def forward(self, batch: Batch, aux: bool = True) -> Outputs:
        """Run the network on a collated batch (``aux=False``: no intermediate predictions).

        Shape: images (N, 3, H, W) with N = B * T.
        """
        num_views = int(batch["boxes"].shape[1])
        return self._forward_impl(
            batch["images"], num_views=num_views, view_sizes=batch["view_sizes"], aux=aux
        )

    def predict_entities(self, batch: Batch) -> list[EntityPrediction]:
        """Network + multi-view fusion: one non-overlapping EntityPrediction per image (the
        inference path of ``predict.py``, ``inference.predictor.predict_entities``)."""
        from cropformer.inference.predictor import predict_entities

        return predict_entities(self._forward_impl, self.fusion, batch, aux=False)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        outputs = self(batch)
        losses = self.criterion(outputs, batch["targets"])
        total = self.criterion.total(losses)
        if not self._all_ranks_finite(total):
            bad = {k: float(v.detach()) for k, v in losses.items() if not torch.isfinite(v).all()}
            terms = ", ".join(f"{k}={v}" for k, v in sorted(bad.items())) or "(on another rank)"
            if self.nan_policy == "raise":
                raise NonFiniteLossError(
                    f"non-finite loss at step {self.global_step}: {terms}; lower the learning "
                    "rate, check the data (scripts/check_dataset.py), or set model.nan_policy=skip"
                )
            self.skipped_steps += 1
            log.warning(f"skipping step {self.global_step}: non-finite loss terms {terms}")
            self.log("train/skipped_steps", float(self.skipped_steps), on_step=True)
            return None
        batch_size = len(batch["targets"])
        self.log("train/loss", total.detach(), on_step=True, prog_bar=True, batch_size=batch_size)
        self.log_dict(self._loss_summary(losses), on_step=True, batch_size=batch_size)
        return total

    def _all_ranks_finite(self, total: Tensor) -> bool:
        bad = torch.tensor(0.0 if bool(torch.isfinite(total)) else 1.0, device=total.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # every rank must take the same decision, or DDP's gradient all-reduce hangs
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        return bool(bad.item() == 0.0)

    def _loss_summary(self, losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Final-layer terms under their official names, plus the weighted total of each pass."""
        out: dict[str, Tensor] = {}
        weights = self.criterion.weight_dict
        per_pass: dict[str, Tensor] = {}
        for key, value in losses.items():
            head = key.rsplit("_", 1)
            is_aux = any(part.isdigit() for part in key.split("_"))
            if not is_aux:
                out[f"train/{key}"] = value.detach()
            suffix = head[-1] if head[-1] in ("2d", "3d") else "2d"
            weighted = value.detach() * float(weights.get(key, 0.0))
            per_pass[suffix] = per_pass.get(suffix, torch.zeros_like(weighted)) + weighted
        for suffix, value in per_pass.items():
            out[f"train/loss_{suffix}"] = value
        return out

    # ------------------------------------------------------------------ classes
    def set_classes(self, classes: Any) -> None:
        """The class set of a class-aware task (a ``CategorySet`` or a categories json list);
        checked against the class head and handed to the fusion."""
        from cropformer.data.categories import CategorySet

        cs = classes if isinstance(classes, CategorySet) else CategorySet.from_json(classes)
        head = int(self.net.decoder.class_head.out_features) - 1
        if len(cs) != head:
            raise ValueError(
                f"the data has {len(cs)} classes but the class head predicts {head}; set "
                "data.num_classes (the task group gives it to the model) to the class count"
            )
        self.classes = cs
        if hasattr(self.fusion, "set_classes"):
            self.fusion.set_classes(cs.isthing, ids=cs.ids, names=cs.names)

    def setup(self, stage: str) -> None:
        if self.task == "entity":
            return
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.classes is not None:
            self._check_data_classes(dm)
            return
        if dm is None or not hasattr(dm, "class_set"):
            raise ValueError(
                f"task={self.task} needs the classes: from the datamodule (class_set) or the "
                "checkpoint"
            )
        self.set_classes(dm.class_set)

    def _check_data_classes(self, dm: Any) -> None:
        """A checkpoint's classes (eval.py) must be the data's: its class head's index k is
        the k-th class it was trained on, so another class set would score the wrong classes."""
        if dm is None or getattr(dm, "task", "entity") == "entity" or not hasattr(dm, "class_set"):
            return
        data_classes = dm.class_set
        if data_classes == self.classes:
            return
        ours, theirs = self.classes.categories, data_classes.categories
        first = next(
            (k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs))
        )

        def name(cats: Any) -> str:
            if first >= len(cats):
                return "none"
            c = cats[first]
            return f"{c.id} {c.name!r} ({'thing' if c.isthing else 'stuff'})"

        raise UserError(
            f"the checkpoint's {len(ours)} classes are not the data's {len(theirs)} classes "
            f"(first difference at class index {first}: {name(ours)} vs {name(theirs)}); "
            "evaluate on data with the class set it was trained on (data=... and data.categories)"
        )

    # ------------------------------------------------------------------ evaluation
    def _make_metric(self, annotation_file: str) -> Any:
        from cropformer.evaluation.metric import EntityAPMetric

        options = self.hparams.get("metric", {})
        metric = EntityAPMetric(gt_annotation_file=annotation_file, **options)
        # its states are gathered by torch.distributed: on the device of the process group
        return metric.to(self.device)

    def _annotation_file(self, stage: str) -> str:
        dm = getattr(self.trainer, "datamodule", None)
        path = getattr(dm, f"{stage}_annotation_file", None) if dm is not None else None
        if path is None:
            raise RuntimeError(
                f"the datamodule must expose `{stage}_annotation_file` (GT json) for entity AP"
            )
        return str(path)

    def _start_metric(self, stage: str) -> None:
        if self.task != "entity":
            self._start_class_metric(stage)
            return
        path = self._annotation_file(stage)
        if self._metric is not None and getattr(self, "_metric_file", None) == path:
            self._metric.reset()  # keeps the parsed ground truth between validations
        else:
            self._metric = self._make_metric(path)
            self._metric_file = path

    def _start_class_metric(self, stage: str) -> None:
        from cropformer.evaluation.class_aware import ClassAwareEvaluator

        if self._metric is not None and getattr(self, "_metric_file", None) == stage:
            self._metric.reset()
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "gt_records"):
            raise RuntimeError(f"task={self.task}: the datamodule must provide gt_records(stage)")
        options = self.hparams.get("metric", {})
        self._metric = ClassAwareEvaluator(
            self.task,
            dm.gt_records(stage),
            self.classes,
            backend=str(options.get("backend", "faster_coco_eval")),
        ).to(self.device)
        self._metric_file = stage

    def on_validation_epoch_start(self) -> None:
        self._start_metric("val")

    def on_test_epoch_start(self) -> None:
        self._start_metric("test")

    def validation_step(self, batch: Batch, batch_idx: int) -> Any:  # type: ignore[override]
        predictions = self.predict_entities(batch)
        self._metric.update(predictions, batch["image_ids"])
        return predictions

    def test_step(self, batch: Batch, batch_idx: int) -> Any:  # type: ignore[override]
        return self.validation_step(batch, batch_idx)

    def _log_metric(self, stage: str) -> dict[str, float]:
        values = self._metric.compute() if self._metric is not None else {}
        # the metric already gathered all ranks: every rank logs the same numbers
        clean = {f"{stage}/{k}": float(v) for k, v in values.items() if not math.isnan(float(v))}
        if clean:
            self.log_dict(clean, sync_dist=False, rank_zero_only=False)
        return clean

    def on_validation_epoch_end(self) -> None:
        self._log_metric("val")
        self.last_val_step = self.global_step
        # travels back to the launching process with the metrics (fork/spawn launchers)
        self.log("val/step", float(self.global_step), sync_dist=False, rank_zero_only=False)

    def on_test_epoch_end(self) -> None:
        self._log_metric("test")

    def metric_results(self) -> list[dict[str, Any]]:
        """COCO-format results of the last evaluation (for writing the results json)."""
        return list(self._metric.results()) if self._metric is not None else []

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        make_optimizer = _partial_from_config(self.hparams.get("optimizer"), "optimizer")
        make_scheduler = _partial_from_config(self.hparams.get("scheduler"), "scheduler")
        optimizer = _call_config(make_optimizer, "model.optimizer", self.net)
        scheduler = _call_config(
            make_scheduler, "model.scheduler", optimizer, trainer_max_steps=self.trainer.max_steps
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # ------------------------------------------------------------------ checkpoints
    def set_data_config(self, data_config: Mapping[str, Any] | None) -> None:
        """Remember the data config of the run in every checkpoint (eval/predict defaults)."""
        self._data_config = _plain(data_config)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if getattr(self, "_data_config", None) is not None:
            checkpoint["data_config"] = self._data_config
        if self.classes is not None:
            checkpoint["classes"] = self.classes.to_json()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "data_config" in checkpoint:
            self._data_config = checkpoint["data_config"]
        if checkpoint.get("classes") and self.classes is None:
            self.set_classes(checkpoint["classes"])
        # checkpoints of compiled networks written by other tools carry ``_orig_mod.``
        from cropformer.model.checkpoint_io import strip_compile_prefix

        checkpoint["state_dict"] = strip_compile_prefix(checkpoint.get("state_dict", {}))


# Checkpoints written before the optimizer/scheduler configs carried a ``_target_``.
_LEGACY_TARGETS = {
    "optimizer": "cropformer.training.optim.adamw",
    "scheduler": "cropformer.training.optim.poly_schedule",
}


def _partial_from_config(config: Mapping[str, Any] | None, kind: str) -> Any:
    """``functools.partial`` of ``model.<kind>`` (``_partial_: true``)."""
    cfg = dict(config or {})
    if "_target_" not in cfg:
        cfg.pop("name", None)  # legacy `name: poly`
        cfg = {"_target_": _LEGACY_TARGETS[kind], **cfg}
    cfg["_partial_"] = True
    return instantiate(cfg)


def _call_config(make: Any, key: str, *args: Any, **kwargs: Any) -> Any:
    """Call a configured partial; a key its target does not take is one error naming it."""
    try:
        return make(*args, **kwargs)
    except TypeError as err:
        if "unexpected keyword argument" not in str(err):
            raise
        raise UserError(f"{key}: {err} (check the spelling of the key in the config)") from err
