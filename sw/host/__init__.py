"""Layer (c): host side (weight images, the board driver, model loading). Never imports gateware."""
