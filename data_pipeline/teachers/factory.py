"""Every teacher is built by ``make_teacher`` and rebuilt from its folder by ``load_teacher``;
``load_or_make_teacher`` builds one once, then loads it (a resumed preparation and the trainer agree
on the tokens).
"""

from __future__ import annotations

import os
from typing import Any

from data_pipeline.teachers.base import TEACHER_JSON, Teacher, read_teacher_json
from data_pipeline.teachers.encodec import EncodecTeacher
from data_pipeline.teachers.kmeans import KMeansTeacher
from data_pipeline.teachers.kmeans_features import KMeansConfig
from mert_jax.files import storage
from mert_jax.files.atomic import atomic_dir

TEACHERS: dict[str, type[Teacher]] = {"kmeans": KMeansTeacher, "encodec": EncodecTeacher}


def make_teacher(name: str, **kwargs: Any) -> Teacher:
  """Build a teacher by name.

  "kmeans": ``audios=`` (iterable of (file id, (samples,) float32) pairs, or bare arrays) or
  ``sample=`` (a ``frame_sample.FrameSample``), ``config=KMeansConfig(...)``, ``seed=`` -> fitted.
  "encodec": ``source=`` folder or hub id (and ``revision=``), or ``seed=`` alone for an untrained
  model; ``config=EncodecTeacherConfig(...)``.
  """
  if name == "kmeans":
    if "sample" in kwargs:
      return KMeansTeacher.fit_sample(kwargs.pop("sample"), **kwargs)
    if "audios" not in kwargs:
      raise ValueError(
        "the kmeans teacher must be fitted: make_teacher('kmeans', audios=..., config=..., "
        "seed=...)"
      )
    return KMeansTeacher.fit(kwargs.pop("audios"), **kwargs)
  if name == "encodec":
    source, seed = kwargs.pop("source", None), kwargs.pop("seed", None)
    if source is not None and seed is not None:
      raise ValueError(
        "make_teacher('encodec'): give source= (pretrained) or seed= (random init), not both"
      )
    if source is not None:
      return EncodecTeacher.from_pretrained(source, **kwargs)
    if seed is None:
      raise ValueError(
        "make_teacher('encodec') needs source= (a folder or hub id with safetensors weights), "
        "or seed= for an untrained test model"
      )
    return EncodecTeacher.random_init(seed, **kwargs)
  raise ValueError(f"unknown teacher {name!r}; choose from {sorted(TEACHERS)}")


def load_teacher(directory: str | os.PathLike) -> Teacher:
  """The teacher saved in ``directory`` (reads teacher.json and dispatches on its name)."""
  name = read_teacher_json(directory).get("name")
  if name not in TEACHERS:
    raise ValueError(f"{os.path.join(directory, TEACHER_JSON)}: unknown teacher {name!r}")
  return TEACHERS[name].load(directory)


def _check_saved_matches(
  teacher: Teacher, directory: str | os.PathLike, name: str, config: Any
) -> None:
  """Refuse a saved teacher that is not the one asked for (another name or k-means settings)."""
  if teacher.name != name:
    raise ValueError(
      f"{directory} holds a saved {teacher.name!r} teacher, not the requested "
      f"{name!r} one; use a new output folder or delete it"
    )
  if (
    isinstance(teacher, KMeansTeacher)
    and isinstance(config, KMeansConfig)
    and (teacher.cfg != config)
  ):
    raise ValueError(
      f"{directory} holds a k-means teacher fitted with other settings "
      f"({teacher.num_codebooks} x {teacher.codebook_size}, asked for "
      f"{config.num_codebooks} x {config.codebook_size}); use a new output folder "
      f"or delete it"
    )


def load_or_make_teacher(directory: str | os.PathLike, name: str, **kwargs: Any) -> Teacher:
  """The teacher saved in ``directory``; when there is none yet, ``make_teacher(name, **kwargs)``,
  saved there atomically first. A resumed run thus tokenises with the teacher of the first one.

  A saved teacher of another name (or, for k-means, other ``config=`` settings) is refused. Give
  k-means ``audios=`` as a lazy iterable: it is only consumed when the teacher is fitted."""
  if storage.exists(os.path.join(directory, TEACHER_JSON)):
    teacher = load_teacher(directory)
    _check_saved_matches(teacher, directory, name, kwargs.get("config"))
    return teacher
  teacher = make_teacher(name, **kwargs)
  with atomic_dir(directory, last=TEACHER_JSON) as tmp:
    teacher.save(tmp)
  return teacher
