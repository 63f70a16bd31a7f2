//! Learned extractors trained in place with libtorch (tch): a convolutional autoencoder whose
//! encoder becomes a TorchScript extractor following the extractor contract (float RGB NCHW in
//! [0,1] at the model's input size → `[N, D]`).
//!
//! Images are prepared exactly as ingest prepares them for a model (`model_input`: bilinear
//! stretch to `size²`, RGB in [0,1]); the network itself turns them grey (channel mean), so the
//! exported encoder accepts what the engine feeds it and nothing is preprocessed twice.

//! The semi-supervised GAN's discriminator is exported the same way, and `contrastive` fine-tunes
//! the last stages of the `balanced`/`robust` CNN on a collection's own images (edited views of
//! one image as positive pairs), saved as a model with the preset CNN's outputs.
//!
//! This crate holds the training code (used by `imgvec train`); the models it exports are
//! used by the engine like any other TorchScript extractor.

mod augment;
mod autoencoder;
mod contrastive;
mod data;
mod sgan;
mod views;

pub use augment::Augment;
pub use autoencoder::{Autoencoder, AutoencoderOptions, EpochReport};
pub use contrastive::{default_base, Contrastive, ContrastiveOptions, BASE_MODEL_FILE};
pub use data::{load_image_bytes, load_images, read_labels, Labels, TrainError, TrainingSet};
pub use sgan::{Discriminator, SganOptions};

/// Seeds libtorch's generator (training is then repeatable for a fixed thread count).
pub fn seed(seed: u64) {
    tch::manual_seed(seed as i64);
}

#[cfg(test)]
mod tests;
