"""Saved-tensor accounting: how many bytes the autograd graph keeps alive, live and at its peak (CPU or GPU).

`torch.autograd.graph.saved_tensors_hooks` sees every tensor a graph saves for backward. Each is wrapped in a small
holder; the holder registers the tensor's storage and drops it when autograd releases the saved tensor. Storages are
counted once however many graph nodes share them (a weight used by fifty UNet calls is one storage), so
`peak_bytes` is the high-water mark of distinct storages held by autograd: the activation memory of backprop.
Storages of the tensors passed as `exclude` (model weights, say) are not counted.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class _Saved:
    __slots__ = ("tensor", "key", "meter")

    def __init__(self, tensor: torch.Tensor, meter: SavedTensorMeter):
        self.tensor = tensor
        self.meter = meter
        storage = tensor.untyped_storage()
        self.key = (storage.data_ptr(), tensor.device)
        meter._acquire(self.key, 0 if self.key in meter._excluded else storage.nbytes())

    def __del__(self):
        self.meter._release(self.key)


class SavedTensorMeter:
    """Context manager measuring live and peak bytes of distinct storages saved by autograd inside it.

    Example:
        with SavedTensorMeter() as meter:
            loss = f(z); torch.autograd.grad(loss, z)
        meter.peak_bytes
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        """Args:
        exclude: tensors whose storages are not counted (e.g. `model.parameters()`).
        """
        self._excluded = {(t.untyped_storage().data_ptr(), t.device) for t in exclude}
        self.live_bytes = 0  # bytes of distinct storages currently held by autograd
        self.peak_bytes = 0  # high-water mark of live_bytes
        self._counts: dict[tuple[int, torch.device], tuple[int, int]] = {}  # storage key -> (references, nbytes)
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _acquire(self, key, nbytes: int) -> None:
        refs, _ = self._counts.get(key, (0, nbytes))
        if refs == 0:
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self._counts[key] = (refs + 1, nbytes)

    def _release(self, key) -> None:
        refs, nbytes = self._counts[key]
        if refs == 1:
            del self._counts[key]
            self.live_bytes -= nbytes
        else:
            self._counts[key] = (refs - 1, nbytes)

    def _pack(self, tensor: torch.Tensor) -> _Saved:
        return _Saved(tensor, self)

    @staticmethod
    def _unpack(saved: _Saved) -> torch.Tensor:
        return saved.tensor

    def __enter__(self) -> SavedTensorMeter:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
