"""ppdet's ``ImageFolder`` (the TestDataset of ``tools/infer.py``) reading the project's list of
image formats.

ppdet 2.6's ``ImageFolder`` keeps only ``.jpg/.jpeg/.png/.bmp`` files, both when it lists a
folder and when it is handed files (``Trainer.predict`` calls ``set_images``): a ``.tif`` would be
dropped without a word. ``accept_image_formats`` makes an ``ImageFolder`` keep the files of every
accepted format instead (``ppdet_dac.data.image_headers.IMAGE_EXTENSIONS``, the list every
decode and folder listing goes by); whether a file is really of that format is the decode's
check, as for every other reader.
"""

import os

from ppdet.data.source.dataset import ImageFolder

from ppdet_dac.data.image_headers import has_image_extension

__all__ = ["AcceptedFormatsImageFolder", "accept_image_formats"]


def _folder_images(folder):
    """The image files under ``folder`` (subfolders too, as ppdet walks it), sorted."""
    found = []
    for root, _, names in sorted(os.walk(folder, followlinks=True)):
        found += [os.path.join(root, n) for n in sorted(names) if has_image_extension(n)]
    return found


class AcceptedFormatsImageFolder(ImageFolder):
    """``ImageFolder`` whose file filter is ``has_image_extension``. Entries of ``image_dir``
    are files (kept when of an accepted format) or folders, relative to ``dataset_dir`` (an
    absolute path as it is), walked with their subfolders as ppdet walks them."""

    def _parse(self):
        entries = [self.image_dir] if isinstance(self.image_dir, str) else list(self.image_dir)
        images = []
        for entry in entries:
            folder = os.path.join(self.dataset_dir or "", entry)
            if os.path.isdir(folder):
                images += _folder_images(folder)
            elif os.path.isfile(entry) and has_image_extension(entry):
                images.append(entry)
        return images


def accept_image_formats(dataset):
    """``dataset`` itself, reading every accepted format when it is a plain ``ImageFolder``
    (its class becomes ``AcceptedFormatsImageFolder``; its settings stay); any other dataset
    is returned unchanged."""
    if type(dataset) is ImageFolder:
        dataset.__class__ = AcceptedFormatsImageFolder
    return dataset
