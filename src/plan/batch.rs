pub struct BatchManager;
