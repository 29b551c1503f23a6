"""Training/evaluation glue on ppdet's Trainer."""
