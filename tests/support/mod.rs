pub mod fake_marathon;
