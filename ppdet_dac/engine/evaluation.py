"""Running ppdet's metrics over a loader and keeping the numbers (ppdet's own loop resets them)."""
import paddle


def evaluate_metrics(trainer, loader=None):
    """Evaluate ``trainer.model`` on ``loader`` (default ``trainer.loader``) with ``trainer._metrics``.

    Returns {metric class name: its get_results()} (for COCO: {'bbox': [12 COCO stats]}), after
    logging the usual tables.
    """
    model = trainer.model
    model.eval()
    with paddle.no_grad():
        for data in (trainer.loader if loader is None else loader):
            outs = model(data)
            for metric in trainer._metrics:
                metric.update(data, outs)
    results = {}
    for metric in trainer._metrics:
        metric.accumulate()
        metric.log()
        results[type(metric).__name__] = metric.get_results()
        metric.reset()
    return results
