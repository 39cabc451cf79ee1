"""LightningDataModules and the datasets, streams and shard formats behind them.

- Training data: ``poses`` (AAE poses), ``dsyn`` (D_syn scenes with m_syn maps), ``images`` (D_I, rendered or
  real), ``cross_modal`` (D_syn and D_I as one ``CombinedLoader`` for phase 1/2), ``muco`` (MuCo-3DHP for Ours-Ws/Fs).
- Evaluation sets: ``mupots`` (MuPoTS-3D), ``h36m`` (Human3.6M-style arrays), ``threedpw`` (3DPW).
- Plumbing: ``streams`` (seeded on-the-fly batch streams, resumable), ``on_device`` (batches generated on the
  training device from a seed), ``real_images`` (image folders and shards), ``shards`` / ``image_shards`` (webdataset
  ``.tar`` readers and writers).
"""
