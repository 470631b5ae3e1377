"""`hilif-prep extract`: a dataset as shipped -> aligned faces in WebDataset shards.

Face API (also used by evaluation): :func:`faces_from_video`, :func:`faces_from_image`,
:class:`FaceConfig`, :class:`VideoFaces` (defined in :mod:`hilif.pipeline.faces`).
"""

from __future__ import annotations

from .faces import FaceConfig, VideoFaces, faces_from_image, faces_from_sequence, faces_from_video

__all__ = ["FaceConfig", "VideoFaces", "faces_from_video", "faces_from_image", "faces_from_sequence"]
