"""Multi-scale deformable attention: custom op with a pure-Paddle reference."""
