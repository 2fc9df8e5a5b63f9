//! What goes into the model and comes out of it as data.
//!
//! | file | what |
//! | --- | --- |
//! | `tokenizer.rs` | the DeepSeek tokenizer, special tokens, incremental detokenization |
//! | `preprocess.rs` | image bytes → checked header → decoded → the vision encoder's pixels |
//! | `image.rs` | the VQ decoder's pixels → RGB → PNG |

pub mod image;
pub mod preprocess;
pub mod tokenizer;
