"""Which sample indices one shard reads, epoch by epoch: reproducible from (seed, epoch) and resumable.

    epoch e order  = default_rng((seed, e)).permutation(N)       (identity when shuffle is off)
    shard r        = order[r::num_shards]                        (train: order cut to a multiple of num_shards first)
    repeats k > 1  = repeat(order, k), padded from its start to a multiple of num_shards, dealt r::num_shards,
                     each shard then cut to N // num_shards        (DeiT's RASampler: repeated augmentation)
    capped         = shard[:max_per_epoch]                        (smoke runs, 0: no cap)
    first epoch    = capped[skip:]                                (resume in the middle of start_epoch)

MindSpore asks the sampler for one epoch of indices each time the pipeline starts an epoch. The epoch
counter lives in the sampler, and every dataset iterator works on its own copy of it: one iterator that
runs several epochs (`create_tuple_iterator(num_epochs=...)`, `Model.train`) sees start_epoch,
start_epoch + 1, ...; a second iterator starts again at start_epoch.
"""
import numpy as np
import mindspore.dataset as ds


class EpochSampler(ds.Sampler):
    def __init__(self, num_samples: int, *, shuffle: bool, seed: int, num_shards: int = 1, shard_id: int = 0,
                 equal_shards: bool = True, start_epoch: int = 0, skip: int = 0, max_per_epoch: int = 0,
                 repeats: int = 1):
        # num_samples=None: MindSpore then takes each epoch's length from what __iter__ yields, which lets the
        # first epoch be shorter after a mid-epoch resume.
        super().__init__(num_samples=None)
        self.total = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.num_shards = num_shards
        self.shard_id = shard_id
        self.equal_shards = equal_shards
        self.start_epoch = start_epoch
        self.skip = skip
        self.max_per_epoch = max_per_epoch
        # Repeated augmentation (Hoffer et al. 2020; DeiT's RASampler): each image `repeats` times in a row of the
        # epoch's order, so with repeats <= num_shards its copies go to different shards, each augmented on its
        # own; every shard still yields N // num_shards samples, so an epoch sees about N / repeats images.
        self.repeats = repeats
        self.epoch = start_epoch  # the epoch the next __iter__ yields

    def epoch_order(self, epoch: int) -> np.ndarray:
        """All shards' order of `epoch`: (N,) int64, the same on every shard."""
        if self.shuffle:
            return np.random.default_rng((self.seed, epoch)).permutation(self.total)
        return np.arange(self.total)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """This shard's full index list for `epoch` (before any resume skip): (n_shard,) int64."""
        order = self.epoch_order(epoch)
        if self.repeats > 1:
            return self._capped(self.repeated_shard(order)[: self.total // self.num_shards])
        if self.equal_shards:  # every shard gets the same count: drop the last N % num_shards of this order
            order = order[: self.total // self.num_shards * self.num_shards]
        return self._capped(order[self.shard_id::self.num_shards])

    def repeated_shard(self, order: np.ndarray) -> np.ndarray:
        """This shard's part of `order` with every index repeated, before the cut: (ceil(N k / R),) int64."""
        repeated = np.repeat(order, self.repeats)  # (N k,): i0 i0 i0 i1 i1 i1 ...
        padding = -len(repeated) % self.num_shards  # as DeiT: pad with the start of the repeated list
        repeated = np.concatenate([repeated, repeated[:padding]])
        return repeated[self.shard_id::self.num_shards]

    def _capped(self, shard: np.ndarray) -> np.ndarray:
        return shard[: self.max_per_epoch] if self.max_per_epoch > 0 else shard

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        indices = self.epoch_indices(epoch)
        if epoch == self.start_epoch:
            indices = indices[self.skip:]
        yield from indices.tolist()
