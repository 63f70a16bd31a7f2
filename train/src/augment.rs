//! Training-time augmentation: random rotation and shift.

use tch::{Device, Kind, Tensor};

/// Random small rotations and shifts (the seed's augmentation), per image.
#[derive(Debug, Clone, Copy, Default)]
pub struct Augment {
    /// Maximum rotation, degrees (uniform in ±).
    pub rotate_deg: f64,
    /// Maximum shift, as a fraction of the image side (uniform in ±).
    pub shift: f64,
}

impl Augment {
    pub fn is_off(&self) -> bool {
        self.rotate_deg == 0.0 && self.shift == 0.0
    }

    /// Applies a random affine warp to each image of the batch `x` (`[B, C, H, W]`).
    pub fn apply(&self, x: &Tensor) -> Tensor {
        if self.is_off() {
            return x.shallow_clone();
        }
        let b = x.size()[0];
        let angle = (Tensor::rand(&[b], (Kind::Float, Device::Cpu)) * 2.0 - 1.0)
            * self.rotate_deg.to_radians();
        let tx = (Tensor::rand(&[b], (Kind::Float, Device::Cpu)) * 2.0 - 1.0) * (2.0 * self.shift);
        let ty = (Tensor::rand(&[b], (Kind::Float, Device::Cpu)) * 2.0 - 1.0) * (2.0 * self.shift);
        let (c, s) = (angle.cos(), angle.sin());
        let theta = Tensor::stack(&[&c, &(-&s), &tx, &s, &c, &ty], 1).view([b, 2, 3]);
        let grid = Tensor::affine_grid_generator(&theta, &x.size(), false);
        // Bilinear, zero (black) padding.
        x.grid_sampler(&grid, 0, 0, false)
    }
}
