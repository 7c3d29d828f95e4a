"""Kronecker-factored curvature of the mean labeled loss on a scope of nn.Linear / nn.Conv2d layers (K-FAC, EK-FAC).

For a layer with input activations ``a`` (a convolution's unfolded patches, one row per output position; a 1
appended where the layer's bias is in the scope) and output gradients ``g``, an item's weight gradient is
``Σ_t g_t a_tᵀ``. K-FAC (Martens & Grosse 2015; Grosse & Martens 2016 for convolutions) approximates the
layer's block of the Gauss-Newton matrix of the *mean* loss by ``G ⊗ A`` with

    A = mean over items and positions of a aᵀ,    G = mean over items of Σ_t g_t g_tᵀ,

and ignores the blocks between layers. EK-FAC (George et al. 2018) keeps the Kronecker eigenbasis
``Q_G ⊗ Q_A`` and replaces the eigenvalues by the per-item second moments of the gradients in that basis, the
best diagonal there. ``(C + λI)⁻¹ v`` is then exact in closed form: two small rotations per layer, no iteration.

The gradients are those of a loss whose covariance is the Gauss-Newton matrix in expectation: the task's
``fisher_loss`` hook (a classifier: cross-entropy at labels drawn from the model's own softmax, the "true"
Fisher) or, where the task offers none, its training loss at the true labels (the empirical Fisher). Either way
this is an approximation of H, not H: ``benchmarks/kfac_solve.py`` measures how far its scores are from a
converged CG solve of the true Hessian.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core import dist
from ..core.errors import ConfigError

#: the per-item rotated gradients of one EK-FAC chunk hold at most this many floats ([items, out, in])
CHUNK_FLOATS = 1 << 24


@dataclass
class _Block:
    """One layer's Kronecker block: which scope entries it covers and, once fitted, its factors."""

    module: nn.Module
    weight_at: int | None  # index of the layer's weight in the scope's parameters (None: not in the scope)
    bias_at: int | None
    a_sum: torch.Tensor | None = None
    g_sum: torch.Tensor | None = None
    positions: float = 0.0
    items: float = 0.0
    qa: torch.Tensor | None = None
    qg: torch.Tensor | None = None
    eig: torch.Tensor | None = None  # [out, in]: the curvature's eigenvalues in the basis Q_G ⊗ Q_A
    corr_sum: torch.Tensor | None = None
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    @property
    def out_features(self) -> int:
        m = self.module
        return m.out_features if isinstance(m, nn.Linear) else m.out_channels

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's input as rows [items, positions, in] (a convolution's unfolded patches), with a column of
        ones where the bias is in the scope and without the weight's columns where the weight is not."""
        m = self.module
        if isinstance(m, nn.Conv2d):
            rows = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
            rows = rows.transpose(1, 2)
        else:
            rows = x.reshape(x.shape[0], -1, x.shape[-1])
        parts = [rows] if self.weight_at is not None else []
        if self.bias_at is not None:
            parts.append(rows.new_ones(rows.shape[0], rows.shape[1], 1))
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]

    def gradients(self, g: torch.Tensor) -> torch.Tensor:
        """Output gradients as rows [items, positions, out]."""
        if isinstance(self.module, nn.Conv2d):
            return g.flatten(2).transpose(1, 2)
        return g.reshape(g.shape[0], -1, g.shape[-1])

    def matrix(self, pieces: list[torch.Tensor]) -> torch.Tensor:
        """The scope's entries of this layer as one [out, in] matrix (weight flattened, then the bias column)."""
        parts = []
        if self.weight_at is not None:
            parts.append(pieces[self.weight_at].reshape(self.out_features, -1))
        if self.bias_at is not None:
            parts.append(pieces[self.bias_at].reshape(-1, 1))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def scatter(self, mat: torch.Tensor, pieces: list[torch.Tensor]) -> None:
        """Write an [out, in] matrix back into the scope's entries (the inverse of :meth:`matrix`)."""
        split = 0
        if self.weight_at is not None:
            shape = pieces[self.weight_at].shape
            split = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            pieces[self.weight_at] = mat[:, :split].reshape(shape)
        if self.bias_at is not None:
            pieces[self.bias_at] = mat[:, split]


def _eigh(sym: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues and vectors of a float64 factor, computed in ``dtype`` (float32 eigh is about 3× faster; float64
    where it fails to converge)."""
    try:
        values, vectors = torch.linalg.eigh(sym.to(dtype))
    except RuntimeError:  # torch.linalg.LinAlgError: an ill-conditioned factor in single precision
        values, vectors = torch.linalg.eigh(sym)
    return values.to(torch.float64), vectors.to(dtype)


def layer_blocks(model: nn.Module, scope) -> list[_Block]:
    """One block per nn.Linear / nn.Conv2d whose weight or bias is in ``scope``; ConfigError naming any scope
    parameter that no such layer owns (K-FAC has no factors for it)."""
    owner: dict[int, tuple[nn.Module, str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            for kind in ("weight", "bias"):
                p = getattr(module, kind, None)
                if p is not None:
                    owner[id(p)] = (module, name)
    blocks: dict[int, _Block] = {}
    uncovered = []
    for index, (pname, p) in enumerate(zip(scope.names, scope.params)):
        if id(p) not in owner:
            uncovered.append(pname)
            continue
        module, mname = owner[id(p)]
        if isinstance(module, nn.Conv2d):
            if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
                raise ConfigError(f"K-FAC covers plain convolutions: {mname} has groups={module.groups}, padding="
                                  f"{module.padding!r}, padding_mode={module.padding_mode!r}; use solver cg or lissa")
        block = blocks.setdefault(id(module), _Block(module, None, None))
        if p is module.weight:
            block.weight_at = index
        else:
            block.bias_at = index
    if uncovered:
        raise ConfigError(f"solvers kfac / ekfac need every scope parameter to belong to an nn.Linear or nn.Conv2d; "
                          f"{', '.join(uncovered[:5])}{' …' if len(uncovered) > 5 else ''} do not: use scope "
                          f"'weights' or 'last', or solver cg")
    return list(blocks.values())


class KroneckerCurvature:
    """The fitted (E)K-FAC curvature of one model's scope: :meth:`product` and :meth:`solve` on flat vectors.

    ``fisher="sampled"``: gradients at labels drawn from the model (the task's ``fisher_loss`` hook);
    ``"empirical"``: at the true labels, the fallback for a task without the hook. Under torch.distributed each
    rank fits on its shard of the labeled items and the sums are all-reduced; the sampled labels are drawn per
    item, so they do not depend on the number of ranks.
    """

    #: EK-FAC keeps the first pass's rows for its second one up to this many bytes (else it runs the pass again)
    cache_bytes: int = 512 * 2 ** 20

    def __init__(self, model: nn.Module, task, scope, hooks=None, *, eigen_correction: bool = True):
        self.model, self.task, self.scope, self.hooks = model, task, scope, hooks
        self.eigen_correction = eigen_correction
        self.blocks = layer_blocks(model, scope)
        self.fisher = "empirical"
        self.rows_cached = False  # EK-FAC's second pass read the first pass's rows (no second forward, backward)
        self.seconds: dict[str, float] = {}

    # ------------------------------------------------------------------ passes over the labeled set
    def _loss_fn(self) -> Callable:
        """``loss(x, y, uniforms)``: the hook's loss at labels drawn from the model, else the training loss."""
        probe = getattr(self.hooks, "fisher_loss", None)

        def loss(x, y, uniforms):
            if probe is not None:
                sampled = probe(self.model, x, uniforms)
                if sampled is not None:
                    self.fisher = "sampled"
                    return sampled
            return self.task.loss(self.model, x, y)
        return loss

    def _batches(self, dataset, ids: np.ndarray, uniforms: torch.Tensor, batch_size: int):
        """``(x, y, uniforms of the batch's items)`` over ``ids``."""
        start = 0
        for batch_ids, x, y in self.task.batches(dataset, ids, batch_size):
            yield x, y, uniforms[start:start + len(batch_ids)]
            start += len(batch_ids)

    def _captured(self, loss_fn: Callable, x, y, u) -> list[tuple[_Block, torch.Tensor, torch.Tensor]]:
        """One forward and one backward to the layers' outputs (no weight gradients): per block, its activation
        rows [items, positions, in] and output-gradient rows [items, positions, out] (a layer called twice in
        one forward contributes both calls as positions)."""
        handles = []
        for block in self.blocks:
            block.inputs, block.outputs = [], []

            def hook(module, inp, out, block=block):
                block.inputs.append(inp[0].detach())
                # the layer's own output; the model goes on with a copy, so that an in-place activation after
                # the layer (ReLU(inplace=True)) cannot turn the gradient asked for into the activation's
                out_copy = out.clone()
                block.outputs.append(out)
                return out_copy
            handles.append(block.module.register_forward_hook(hook))
        try:
            with torch.enable_grad():
                losses = loss_fn(x, y, u)
                # calls made without grad (a detector's post-processing) are not on the loss's graph: left out
                outs = [o for b in self.blocks for o in b.outputs if o.requires_grad]
                grads = iter(torch.autograd.grad(losses.sum(), outs, allow_unused=True) if outs else ())
        finally:
            for h in handles:
                h.remove()
        captured = []
        for block in self.blocks:
            acts, gs = [], []
            for inp, out in zip(block.inputs, block.outputs):
                if not out.requires_grad:
                    continue
                g = next(grads)
                acts.append(block.activations(inp))
                gs.append(block.gradients(torch.zeros_like(out) if g is None else g.detach()))
            block.inputs, block.outputs = [], []
            if not acts:
                raise ConfigError(f"K-FAC: the layer {type(block.module).__name__} of the scope is not on the "
                                  f"loss's graph (no call of it reaches the loss)")
            captured.append((block, acts[0] if len(acts) == 1 else torch.cat(acts, 1),
                             gs[0] if len(gs) == 1 else torch.cat(gs, 1)))
        return captured

    def fit(self, dataset, ids: np.ndarray, batch_size: int, generator: torch.Generator) -> "KroneckerCurvature":
        """The factors from one pass over the labeled ``ids`` (under torch.distributed each rank takes its shard,
        and the sums are all-reduced), their eigenbases, and (EK-FAC) the eigenvalues from a second pass. The
        sampled labels come from one uniform per item drawn from ``generator`` for all of ``ids``: the same
        draws, hence the same curvature up to summation order, in one process and over several."""
        t0 = time.perf_counter()
        ids = np.asarray(ids, dtype=np.int64)
        uniforms = torch.rand(len(ids), generator=generator, dtype=torch.float64)
        share = dist.shard(np.arange(len(ids)))
        ids, uniforms = ids[share], uniforms[torch.as_tensor(share, dtype=torch.long)]
        loss_fn = self._loss_fn()
        for block in self.blocks:
            block.a_sum = block.g_sum = None
            block.positions = block.items = 0.0
        kept: list | None = [] if self.eigen_correction else None
        kept_bytes = 0
        for x, y, u in self._batches(dataset, ids, uniforms, batch_size):
            captured = self._captured(loss_fn, x, y, u)
            if kept is not None:  # EK-FAC's second pass reads the same rows: keep them while they are small
                kept_bytes += sum(a.numel() * a.element_size() + g.numel() * g.element_size() for _, a, g in captured)
                if kept_bytes <= self.cache_bytes:
                    kept.append(captured)
                else:
                    kept = None
            for block, a, g in captured:
                a2, g2 = a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])
                aa, gg = (a2.T @ a2).double(), (g2.T @ g2).double()
                block.a_sum = aa if block.a_sum is None else block.a_sum + aa
                block.g_sum = gg if block.g_sum is None else block.g_sum + gg
                block.positions += a2.shape[0]
                block.items += a.shape[0]
        for block in self.blocks:
            if block.a_sum is None:  # an empty share (more ranks than labeled items): zeros of the layer's size
                if not dist.active():
                    raise ConfigError("K-FAC needs a non-empty labeled set")
                n_in = block.matrix(list(self.scope.unflatten(self.scope.values()))).shape[1]
                like = dict(dtype=torch.float64, device=self.scope.params[0].device)
                block.a_sum = torch.zeros(n_in, n_in, **like)
                block.g_sum = torch.zeros(block.out_features, block.out_features, **like)
            counts = dist.all_sum(torch.tensor([block.positions, block.items], dtype=torch.float64))
            A = dist.all_sum(block.a_sum) / float(counts[0])
            G = dist.all_sum(block.g_sum) / float(counts[1])
            dtype = self.scope.params[0].dtype
            la, qa = _eigh(A, dtype)
            lg, qg = _eigh(G, dtype)
            block.qa, block.qg = qa, qg
            block.eig = torch.outer(lg.clamp_min(0), la.clamp_min(0)).to(dtype)
            block.items = float(counts[1])
            block.a_sum = block.g_sum = None
        self.seconds["factors_s"] = time.perf_counter() - t0
        if self.eigen_correction:
            t0 = time.perf_counter()
            self._correct(kept if kept is not None else
                          (self._captured(loss_fn, x, y, u)
                           for x, y, u in self._batches(dataset, ids, uniforms, batch_size)))
            self.rows_cached = kept is not None
            self.seconds["eigen_correction_s"] = time.perf_counter() - t0
        return self

    def _correct(self, batches) -> None:
        """EK-FAC: eig[i, j] = mean over items of (Q_Gᵀ ∇_W l Q_A)[i, j]², the per-item gradients rotated
        (``batches``: each batch's captured rows, from :meth:`_captured`)."""
        for block in self.blocks:
            block.corr_sum = torch.zeros_like(block.eig, dtype=torch.float64)
        for captured in batches:
            for block, a, g in captured:
                ra, rg = a @ block.qa, g @ block.qg  # [items, positions, in / out]
                if ra.shape[1] == 1:  # one position: the rotated gradient is an outer product, squares factor
                    block.corr_sum += (rg[:, 0].square().T @ ra[:, 0].square()).double()
                    continue
                step = max(1, CHUNK_FLOATS // max(1, block.eig.numel()))
                for start in range(0, ra.shape[0], step):
                    rot = torch.einsum("nto,nti->noi", rg[start:start + step], ra[start:start + step])
                    block.corr_sum += rot.square().sum(0).double()
        for block in self.blocks:
            block.eig = (dist.all_sum(block.corr_sum) / block.items).to(block.eig.dtype)
            block.corr_sum = None

    # ------------------------------------------------------------------ products on flat vectors
    def _apply(self, vec: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        pieces = list(self.scope.unflatten(vec))
        for block in self.blocks:
            rotated = block.qg.T @ block.matrix(pieces) @ block.qa
            block.scatter(block.qg @ fn(rotated, block) @ block.qa.T, pieces)
        return self.scope.flatten(pieces)

    def product(self, vec: torch.Tensor) -> torch.Tensor:
        """C v, C the block-diagonal Kronecker-factored curvature."""
        return self._apply(vec, lambda r, b: r * b.eig)

    def solve(self, vec: torch.Tensor, damping: float) -> torch.Tensor:
        """(C + λI)⁻¹ v in closed form (λ > 0, or C positive definite on v's support)."""
        return self._apply(vec, lambda r, b: r / (b.eig + damping))

    def info(self) -> dict[str, Any]:
        return {"curvature": "ekfac" if self.eigen_correction else "kfac", "fisher": self.fisher,
                "layers": len(self.blocks), "rows_cached": self.rows_cached,
                **{k: round(v, 4) for k, v in self.seconds.items()}}
