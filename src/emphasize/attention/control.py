"""The attention state of one sampling run: which rows the capture processors record, whether a pass keeps its
graph or feeds the running statistics, and the store they write to. Installing the processors is
`attention.install`'s job; this module imports neither it nor the processor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from emphasize.attention.store import AttentionStore


class StopForward(Exception):
    """Raised by the capture processor once a loss pass has recorded every map it needs: the rest of the UNet
    (the expensive high-resolution up blocks) would only compute a noise prediction nobody reads."""


@dataclass
class AttentionController:
    """Mutable per-pass state shared by all capture processors of one UNet.

    The sampler sets these fields before each UNet call: which batch rows to record (the conditional-text rows),
    whether to keep their graph for a loss, whether to add them to the running statistics, and an optional
    prompt-to-prompt per-token scale applied to chosen rows after the softmax.
    """

    store: AttentionStore = field(default_factory=AttentionStore)
    record_rows: tuple[int, ...] = ()  # batch rows whose maps are recorded; () records nothing
    keep_pass: bool = False  # keep this pass's maps (with autograd graph) for a loss
    keep_running: bool = False  # add this pass's maps to the running statistics (reporting)
    token_scale: torch.Tensor | None = None  # (T,) multiplier on post-softmax probabilities (reweight), or None
    scale_rows: tuple[int, ...] = ()  # batch rows the token scale applies to
    stop_after: tuple[int, int] | None = None  # (HW, n): raise StopForward after the n-th map of HW pixels

    def on_probs(self, probs: torch.Tensor, heads: int) -> torch.Tensor:
        """Record and optionally rescale `(B*heads, HW, T)` probabilities; returns the probabilities to use."""
        batch = probs.shape[0] // heads
        per_row = probs.view(batch, heads, *probs.shape[1:])  # (B, heads, HW, T)
        if self.token_scale is not None and self.scale_rows:
            keep = torch.ones(batch, 1, 1, 1, dtype=probs.dtype, device=probs.device)
            keep[list(self.scale_rows)] = 0
            token_scale = self.token_scale.to(probs).view(1, 1, 1, -1)
            # rows in scale_rows get probs * token_scale, the others are unchanged (no renormalisation, as in P2P)
            per_row = per_row * (keep + (1 - keep) * token_scale)
            probs = per_row.reshape(probs.shape)
        # recorded after any rescaling: the report shows the attention the model actually used
        # running statistics come from sampling passes only, never from gradient (re)computations
        keep_running = self.keep_running and not probs.requires_grad
        if self.record_rows and (self.keep_pass or keep_running):
            self.store.record(per_row[list(self.record_rows)], heads, self.keep_pass, keep_running)
            if (
                self.stop_after is not None
                and len(self.store.pass_maps.get(self.stop_after[0], ())) == self.stop_after[1]
            ):
                raise StopForward
        return probs

    def set_pass(
        self,
        rows: tuple[int, ...] = (),
        keep_pass: bool = False,
        keep_running: bool = False,
        stop_after: tuple[int, int] | None = None,
    ) -> AttentionController:
        """Configure the next UNet pass (and clear the previous pass's maps).

        Args:
            rows: batch rows to record.
            keep_pass: keep the maps with their graph (a loss pass).
            keep_running: add them to the running statistics.
            stop_after: `(HW, n)`: end the pass early (`StopForward`) once n maps of HW pixels are recorded.
        """
        self.store.reset()
        self.record_rows, self.keep_pass, self.keep_running = rows, keep_pass, keep_running
        self.stop_after = stop_after
        return self

    def recorder(self, row: int):
        """A `before_prediction` hook for the denoising loop: each guided prediction adds batch row `row`'s maps
        (the conditional row) to the running statistics. Call `set_pass()` after the loop."""

        def hook(i: int) -> None:
            self.set_pass(rows=(row,), keep_running=True)

        return hook
