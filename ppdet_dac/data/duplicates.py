"""Duplicated ids in a COCO-style annotation dict: found, refused or resolved.

Three kinds of duplicate are looked for:

* **image ids** -- two ``images`` entries with the same ``id`` (pycocotools keeps the last one
  in its index, yet the dataset would load both: an image counted twice);
* **image files** -- two entries (different ids) with the same ``file_name`` (the same picture
  evaluated twice, its boxes counted twice);
* **annotation ids** -- two ``annotations`` with the same ``id`` (pycocotools keeps one of them
  in its index; the metric then matches detections against a different ground truth than the
  one listed).

Evaluation data is refused (``check_no_duplicates``: one ValueError naming the file, the first
few ids of each kind and their counts). Training data is resolved by ``resolve_duplicates``:

* an image id listed again: the first entry (in file order) is kept, the later ones dropped; the
  annotations of that id all stay (they cannot tell the entries apart);
* an image file listed again under another id: the first entry is kept, the later entries and
  their annotations are dropped (they would repeat the same boxes);
* an annotation id used again: every annotation is kept, the repeats get new ids above the
  largest id in the file (in file order).
"""

import os

from ppdet_dac.data.annotations import first_few


def _repeated(keys):
    """The keys that occur more than once, in order of their first repeat."""
    seen, repeated = set(), {}
    for key in keys:
        if key in seen:
            repeated.setdefault(key, None)
        seen.add(key)
    return list(repeated)


def _file_key(name):
    return os.path.normpath(name) if isinstance(name, str) else name


class DuplicateReport:
    """The duplicated ids of one annotation dict.

    image_ids: image ids listed more than once; files: file names listed more than once (with
    the ids they are listed under); annotation_ids: annotation ids used more than once."""

    def __init__(self, anno):
        images = [img for img in anno.get("images", []) if isinstance(img, dict)]
        anns = [a for a in anno.get("annotations", []) or [] if isinstance(a, dict)]
        self.image_ids = _repeated(img.get("id") for img in images)
        ids_by_file = {}
        for img in images:
            ids_by_file.setdefault(_file_key(img.get("file_name")), []).append(img.get("id"))
        self.files = {
            name: ids for name, ids in ids_by_file.items() if name is not None and len(set(ids)) > 1
        }
        self.annotation_ids = _repeated(a.get("id") for a in anns if a.get("id") is not None)

    def __bool__(self):
        return bool(self.image_ids or self.files or self.annotation_ids)

    def describe(self):
        """'3 image ids listed twice or more (1, 2, 7); ...' for the kinds present."""
        parts = []
        if self.image_ids:
            parts.append(
                f"{len(self.image_ids)} image ids listed more than once "
                f"({first_few(self.image_ids)})"
            )
        if self.files:
            named = [
                f"{name} as ids {'/'.join(str(i) for i in ids)}" for name, ids in self.files.items()
            ]
            parts.append(
                f"{len(self.files)} image files listed under more than one id ({first_few(named)})"
            )
        if self.annotation_ids:
            parts.append(
                f"{len(self.annotation_ids)} annotation ids used more than once "
                f"({first_few(self.annotation_ids)})"
            )
        return "; ".join(parts)


def check_no_duplicates(anno, source):
    """Raise one ValueError naming ``source`` (the annotation file) and the duplicated ids when
    ``anno`` has any (module docstring); evaluation data must not have them."""
    if not isinstance(anno, dict):
        raise ValueError(f"{source}: the top level is not a JSON object")
    report = DuplicateReport(anno)
    if report:
        raise ValueError(
            f"{source}: duplicated ids, which would corrupt the metric: "
            f"{report.describe()}. Fix the file (each image once, under one id; "
            "each annotation id once)"
        )


def resolve_duplicates(anno):
    """(a copy of ``anno`` without duplicates by the module docstring's rules, DuplicateReport
    of the original; falsy when nothing was changed). ``anno`` itself is not modified."""
    report = DuplicateReport(anno)
    if not report:
        return anno, report
    seen_ids, seen_files, dropped_ids = set(), set(), set()
    images = []
    for img in anno.get("images", []):
        if not isinstance(img, dict):
            images.append(img)
            continue
        image_id, name = img.get("id"), _file_key(img.get("file_name"))
        if image_id in seen_ids:
            continue
        if name in seen_files:
            dropped_ids.add(image_id)
            continue
        seen_ids.add(image_id)
        seen_files.add(name)
        images.append(img)
    dropped_ids -= seen_ids
    annotations = []
    if "annotations" in anno:
        used = {a.get("id") for a in anno["annotations"] or [] if isinstance(a, dict)}
        next_id = (
            max([i for i in used if isinstance(i, int) and not isinstance(i, bool)], default=0) + 1
        )
        taken = set()
        for ann in anno["annotations"] or []:
            if isinstance(ann, dict):
                if ann.get("image_id") in dropped_ids:
                    continue
                if ann.get("id") is not None and ann.get("id") in taken:
                    ann = dict(ann, id=next_id)
                    next_id += 1
                taken.add(ann.get("id"))
            annotations.append(ann)
    resolved = dict(anno, images=images)
    if "annotations" in anno:
        resolved["annotations"] = annotations
    return resolved, report


def resolution_note(report, anno, resolved, source):
    """One warning line: what ``resolve_duplicates`` found in ``source`` and what it did."""
    dropped_images = len(anno.get("images", [])) - len(resolved.get("images", []))
    dropped_anns = len(anno.get("annotations", []) or []) - len(
        resolved.get("annotations", []) or []
    )
    return (
        f"{source}: {report.describe()}; resolved for training: kept the first entry of "
        f"each image id and image file (dropped {dropped_images} repeated image entries and "
        f"the {dropped_anns} annotations of repeated files) and gave the repeated annotation "
        "ids new ids"
    )
