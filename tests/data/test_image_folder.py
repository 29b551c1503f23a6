"""tools/infer.py's TestDataset (ppdet's ImageFolder) reads the project's list of formats: a
.tif handed to it is kept, where ppdet's own filter drops it without a word."""

from ppdet.data.source.dataset import ImageFolder

from ppdet_dac.data.image_folder import AcceptedFormatsImageFolder, accept_image_formats


def _files(folder):
    names = ["a.tif", "b.JPG", "c.tiff", "d.gif", "e.png"]
    for name in names:
        (folder / name).write_bytes(b"x")  # the decode checks the bytes later
    return [str(folder / n) for n in names]


def _loaded(dataset, images):
    dataset.set_images(images)  # what ppdet's Trainer.predict calls
    return [dataset.get_imid2path()[i] for i in sorted(dataset.get_imid2path())]


def test_handed_files_of_every_accepted_format_are_kept(tmp_path):
    files = _files(tmp_path)
    # the control: ppdet's filter drops the TIFFs
    assert _loaded(ImageFolder(), files) == [files[1], files[4]]
    dataset = ImageFolder(anno_path="labels.txt")
    assert accept_image_formats(dataset) is dataset
    assert type(dataset) is AcceptedFormatsImageFolder and dataset.anno_path == "labels.txt"
    assert _loaded(dataset, files) == [files[0], files[1], files[2], files[4]]


def test_a_folder_is_walked_with_the_same_list(tmp_path):
    (tmp_path / "sub").mkdir()
    files = _files(tmp_path / "sub")
    dataset = accept_image_formats(ImageFolder(dataset_dir=str(tmp_path)))
    assert _loaded(dataset, ["sub"]) == [files[0], files[1], files[2], files[4]]


def test_other_datasets_are_left_as_they_are():
    class Mine(ImageFolder):
        pass

    dataset = Mine()
    assert type(accept_image_formats(dataset)) is Mine
